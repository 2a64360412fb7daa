import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from kerasmed.data.generate import (
    MANIFEST_COLUMNS,
    NODULE_COLUMNS,
    case_seed,
    generate_dataset,
    split_counts,
)
from kerasmed.data.synthetic_ct import make_case
from serving.errors import ConfigError, DataError
from serving.image import PHI_KEYS
from serving.io import read_dicom_series, read_nifti
from serving.ownership import DATASET, read_marker
from tests.helpers import assert_one_line_error, folder_digest, kerasmed_process

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "lung_nodule_seg_2d.yaml"
SHAPE = (16, 96, 96)
# int16 DICOM storage with slope 1 rounds to whole HU.
HU_ATOL = 0.5 + 1e-3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    manifest = generate_dataset(root, num_cases=3, seed=5, shape=SHAPE, progress=False)
    return root, manifest


def test_layout_and_manifest(dataset):
    root, manifest_path = dataset
    assert manifest_path == root / "manifest.csv"
    assert sorted(p.name for p in root.iterdir()) == [
        ".kerasmed",
        "cases",
        "dataset.json",
        "manifest.csv",
        "nodules.csv",
    ]
    marker = read_marker(root)  # what made the folder, so that only kerasmed ever replaces it
    assert marker["kind"] == DATASET and marker["created_by"] == "kerasmed generate"
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    manifest = pd.read_csv(manifest_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest.case_id) == ["case_000", "case_001", "case_002"]
    assert manifest.split.value_counts().to_dict() == {"train": 2, "val": 1}
    for row in manifest.itertuples():
        assert not row.image_path.startswith("/")
        assert (root / row.image_path / "IM0001.dcm").is_file()
        assert len(list((root / row.image_path).iterdir())) == SHAPE[0]
        assert (root / row.mask_path).is_file() and (root / row.lung_mask_path).is_file()
    info = json.loads((root / "dataset.json").read_text())
    assert info["seed"] == 5 and info["num_cases"] == 3 and info["shape"] == list(SHAPE)
    assert info["split_fractions"] == [0.7, 0.2, 0.1] and info["complete"] is True


def test_nodule_table_matches_the_generator(dataset):
    root, _ = dataset
    table = pd.read_csv(root / "nodules.csv")
    assert list(table.columns) == NODULE_COLUMNS
    for index in range(3):
        expected = make_case(case_seed(5, index), shape=SHAPE).nodules
        rows = table[table.case_id == f"case_{index:03d}"]
        assert list(rows.nodule_id) == list(range(1, len(expected) + 1))
        for (_, row), nodule in zip(rows.iterrows(), expected, strict=True):
            for key, value in nodule.items():
                assert (
                    row[key] == pytest.approx(value)
                    if isinstance(value, float)
                    else row[key] == value
                )


def test_files_read_back_as_the_generated_case(dataset):
    root, manifest_path = dataset
    row = pd.read_csv(manifest_path).iloc[1]
    case = make_case(case_seed(5, 1), shape=SHAPE)
    ct = read_dicom_series(root / row.image_path)
    np.testing.assert_allclose(ct.array, case.ct.array, atol=HU_ATOL, rtol=0)
    assert ct.same_geometry(case.ct, atol=1e-4)
    for path, expected in ((row.mask_path, case.nodule_mask), (row.lung_mask_path, case.lung_mask)):
        mask = read_nifti(root / path)
        assert mask.array.dtype == np.uint8
        assert mask.same_geometry(ct, atol=1e-4)
        np.testing.assert_array_equal(mask.array, expected.array)


def test_no_phi_in_files_or_metadata(dataset):
    root, manifest_path = dataset
    for row in pd.read_csv(manifest_path).itertuples():
        folder = root / row.image_path
        for path in sorted(folder.iterdir())[:3]:
            ds = pydicom.dcmread(path)
            assert str(ds.PatientName) == "ANON" and ds.PatientID == "ANON"
            assert ds.get("PatientBirthDate", "") == "" and ds.get("InstitutionName") is None
        assert not PHI_KEYS & set(read_dicom_series(folder).metadata)


def test_existing_dataset_is_reused(dataset):
    root, manifest_path = dataset
    stamp = (root / "dataset.json").stat().st_mtime_ns
    again = generate_dataset(root, num_cases=3, seed=5, shape=SHAPE, progress=False, overwrite=True)
    assert again == manifest_path and (root / "dataset.json").stat().st_mtime_ns == stamp


def test_existing_other_content_needs_overwrite(tmp_path):
    root = tmp_path / "synthetic"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"no \.kerasmed marker.*Pass --overwrite \(Python: "
                       r"overwrite=True\).*Received: .*synthetic holding 'notes.txt'"):
        generate_dataset(root, num_cases=2, seed=1, shape=SHAPE, progress=False)
    assert (root / "notes.txt").read_text() == "mine"
    generate_dataset(root, num_cases=2, seed=1, shape=SHAPE, progress=False, overwrite=True)
    assert not (root / "notes.txt").exists()
    # Even a dataset generate made is replaced by one of other parameters only on request.
    with pytest.raises(DataError, match=r"parameters \{.*'seed': 2.*marker says: synthetic dataset "
                       r"made by kerasmed generate.*--overwrite"):
        generate_dataset(root, num_cases=2, seed=2, shape=SHAPE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_a_file_is_never_replaced(tmp_path):
    root = tmp_path / "synthetic"
    root.write_text("not a folder")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="must be a folder. Received: .*synthetic is a file"):
            generate_dataset(root, num_cases=2, seed=1, shape=SHAPE, progress=False, overwrite=overwrite)
    assert root.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_cli_refuses_a_folder_it_did_not_make_and_names_the_flag(tmp_path):
    root = tmp_path / "mine"
    (root / "scans").mkdir(parents=True)
    (root / "scans" / "IM0001.dcm").write_bytes(b"\x00" * 200)
    (root / "notes.txt").write_text("mine")
    before = folder_digest(root)
    proc = kerasmed_process("generate", CONFIG, "--set", "synthetic.num_cases=2", "--output", root)
    assert_one_line_error(proc, "kerasmed generate: error:", "Pass --overwrite", "no .kerasmed marker",
                          f"Received: {root} holding 'notes.txt', 'scans'")
    assert folder_digest(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left


def test_split_counts_and_bad_arguments(tmp_path):
    assert split_counts(24, (0.7, 0.2, 0.1)) == {"train": 17, "val": 5, "test": 2}
    assert split_counts(2, (1.0, 0.0, 0.0)) == {"train": 1, "val": 1, "test": 0}
    with pytest.raises(ConfigError, match="summing to 1"):
        split_counts(10, (0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="at least one training case"):
        split_counts(3, (0.0, 0.5, 0.5))
    with pytest.raises(ConfigError, match="num_cases=1"):
        generate_dataset(tmp_path / "x", num_cases=1, progress=False)
    assert not (tmp_path / "x").exists()


def test_case_seeds_differ():
    seeds = [case_seed(0, i) for i in range(5)] + [case_seed(1, 0)]
    assert len(set(seeds)) == 6 and case_seed(0, 3) == case_seed(0, 3)
