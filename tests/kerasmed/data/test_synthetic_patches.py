import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from kerasmed.config import ColumnsConfig, DataConfig
from kerasmed.data.generate import case_seed, split_counts
from kerasmed.data.manifest import read_manifest
from kerasmed.data.synthetic_ct import make_case
from kerasmed.data.synthetic_patches import (
    MANIFEST_COLUMNS,
    MAX_SHIFT,
    NODULE_COLUMNS,
    NODULE_DIAMETER_MM,
    PNG_HU_WINDOW,
    PNG_OFFSET,
    generate_patch_dataset,
    volume_patches,
)
from serving.errors import ConfigError, DataError
from serving.io import read_image, read_nifti
from serving.ownership import DATASET, read_marker

SMALL = dict(num_volumes=5, patches_per_volume=8, patch_size=48, context=3, seed=3,
             shape=(24, 192, 192), progress=False)


@pytest.fixture(scope="module")
def nifti(tmp_path_factory):
    return generate_patch_dataset(tmp_path_factory.mktemp("nifti") / "patches", **SMALL)


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    return generate_patch_dataset(tmp_path_factory.mktemp("png") / "patches", format="png", **SMALL)


def _manifest(root):
    return pd.read_csv(root / "manifest.csv", dtype={"split": str})


def test_layout_manifest_and_balance(nifti):
    assert sorted(p.name for p in nifti.iterdir()) == [".kerasmed", "dataset.json", "images",
                                                        "manifest.csv"]
    assert read_marker(nifti)["kind"] == DATASET
    assert not [p for p in nifti.parent.iterdir() if p.name.startswith(".")]  # no temp folder
    table = _manifest(nifti)
    assert list(table.columns) == MANIFEST_COLUMNS
    assert len(table) == 5 * 8 and table.case_id.is_unique
    assert table.label.value_counts().to_dict() == {"nodule": 20, "no_nodule": 20}
    assert not any(p.startswith("/") for p in table.image_path)
    positive = table.label == "nodule"
    assert table.loc[positive, ["nodule_y", "nodule_x", "nodule_radius_px"]].notna().all().all()
    assert table.loc[~positive, ["nodule_y", "nodule_x", "nodule_radius_px"]].isna().all().all()
    info = json.loads((nifti / "dataset.json").read_text())
    assert info["complete"] and info["num_volumes"] == 5 and info["format"] == "nifti"
    # The phantoms kept are seeds of `case_seed(3, i)`, in order of i (some skipped).
    drawn = [case_seed(3, i) for i in range(100)]
    kept = [drawn.index(s) for s in info["volume_seeds"]]
    assert kept == sorted(kept) and len(set(kept)) == 5
    assert sum(info["anchor_counts"].values()) == 40 and info["anchor_counts"]["nodule"] == 20


def test_split_is_by_patient(nifti):
    table = _manifest(nifti)
    per_patient = table.groupby("patient_id").agg(splits=("split", "nunique"), n=("case_id", "size"),
                                                  split=("split", "first"))
    assert (per_patient.splits == 1).all() and (per_patient.n == 8).all()
    assert per_patient.split.value_counts().to_dict() == {
        k: v for k, v in split_counts(5, (0.7, 0.15, 0.15)).items() if v}
    # Each patient's patches sit in their own volume: the case id names it.
    assert all(c.startswith(p + "_") for c, p in zip(table.case_id, table.patient_id))


def test_labels_match_the_source_volume(nifti):
    """Each patch is located in its phantom by its NIfTI origin, independently of the generator:
    its voxels are the phantom's, a positive's recorded centre lies on a nodule wholly inside the
    patch, and a negative holds no nodule voxel."""
    table = _manifest(nifti)
    seeds = json.loads((nifti / "dataset.json").read_text())["volume_seeds"]
    half, size = 1, 48
    for patient, rows in table.groupby("patient_id"):
        case = make_case(seeds[int(patient.split("_")[1])], shape=SMALL["shape"])
        ct, mask, lung = case.ct, case.nodule_mask.array, case.lung_mask.array
        for row in rows.itertuples():
            image = read_nifti(nifti / row.image_path)
            assert image.array.dtype == np.int16 and image.shape == (3, size, size)
            np.testing.assert_allclose(image.spacing, ct.spacing, atol=1e-4)
            index = np.linalg.solve(ct.direction, np.asarray(image.origin) - ct.origin) / ct.spacing
            corner = np.round(index).astype(int)
            np.testing.assert_allclose(index, corner, atol=1e-3)
            box = tuple(slice(c, c + n) for c, n in zip(corner, image.shape))
            np.testing.assert_array_less(np.abs(image.array - ct.array[box]), 0.5 + 1e-3)  # whole HU
            block = mask[box]
            if row.label == "no_nodule":
                assert block.sum() == 0
                assert lung[box][half].any()
                continue
            y, x = int(round(row.nodule_y)), int(round(row.nodule_x))
            assert block[half, y, x] == 1
            # ... of a solid nodule: the listed nodule centred nearest to that voxel.
            point = ct.origin + ct.direction @ ((corner + [half, y, x]) * ct.spacing)
            nearest = min(case.nodules, key=lambda n: np.linalg.norm(
                [n["center_x_mm"] - point[0], n["center_y_mm"] - point[1], n["center_z_mm"] - point[2]]))
            assert nearest["kind"] == "solid"
            assert abs(row.nodule_y - (size - 1) / 2) <= MAX_SHIFT * size + 2
            assert abs(row.nodule_x - (size - 1) / 2) <= MAX_SHIFT * size + 2
            # The nodule is wholly inside the patch: no nodule voxel on its border.
            assert not (block[:, [0, -1]].any() or block[:, :, [0, -1]].any())
            sections, _ = ndimage.label(block[half])
            area = (sections == sections[y, x]).sum()
            assert row.nodule_radius_px == pytest.approx(np.sqrt(area / np.pi), abs=0.01)
            # The centre slice shows at least half the largest section of a 6-15 mm nodule.
            diameter = 2 * row.nodule_radius_px * np.sqrt(ct.spacing[1] * ct.spacing[2])
            assert NODULE_DIAMETER_MM[0] * np.sqrt(0.5) - 0.01 <= diameter <= NODULE_DIAMETER_MM[1]


def test_same_seed_same_arrays_other_seed_others(nifti, tmp_path):
    again = generate_patch_dataset(tmp_path / "again", **SMALL)
    other = generate_patch_dataset(tmp_path / "other", **{**SMALL, "seed": 4, "num_volumes": 2})
    first, second = _manifest(nifti), _manifest(again)
    pd.testing.assert_frame_equal(first, second)
    for rel in first.image_path:
        a, b = read_nifti(nifti / rel), read_nifti(again / rel)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.origin == b.origin
    different = _manifest(other)
    assert not np.array_equal(read_nifti(other / different.image_path[0]).array,
                              read_nifti(nifti / first.image_path[0]).array)


def test_2d_patches(tmp_path):
    root = generate_patch_dataset(tmp_path / "2d", **{**SMALL, "num_volumes": 2, "context": 1,
                                                       "patches_per_volume": 4})
    table = _manifest(root)
    assert len(table) == 8 and (table.label == "nodule").sum() == 4
    assert {read_nifti(root / p).shape for p in table.image_path} == {(1, 48, 48)}


def test_png_is_the_nifti_centre_slice_plus_offset(nifti, png):
    """Same seed, same patches: each 16-bit PNG reads back (through `serving.io.read_image`) as
    exactly HU + 1024 of its NIfTI patch's centre slice."""
    assert PNG_OFFSET == 1024 and PNG_HU_WINDOW == (24, 1424)
    assert sorted(p.name for p in png.iterdir()) == [".kerasmed", "dataset.json", "no_nodule",
                                                      "nodule", "nodules.csv"]
    table = pd.read_csv(png / "nodules.csv", dtype={"split": str})
    manifest = _manifest(nifti)
    assert list(table.columns) == NODULE_COLUMNS and len(table) == len(manifest)
    assert [c.split("/")[0] for c in table.case_id] == list(manifest.label)
    pd.testing.assert_frame_equal(table.drop(columns="case_id"),
                                  manifest[NODULE_COLUMNS[1:]].reset_index(drop=True))
    info = json.loads((png / "dataset.json").read_text())
    assert info["png_offset"] == 1024 and info["hu_window"] == [24, 1424]
    for case_id, rel in zip(table.case_id, manifest.image_path):
        image = read_image(png / case_id)
        assert image.array.dtype == np.uint16 and image.shape == (48, 48)
        hu = read_nifti(nifti / rel).array[1].astype(np.int64)
        np.testing.assert_array_equal(image.array, np.clip(hu + 1024, 0, 65535))


def test_read_by_kerasmed_manifest_csv(nifti):
    data = DataConfig(root=str(nifti), columns=ColumnsConfig(mask=None, label="label"))
    cases = read_manifest(nifti, data=data)
    table = _manifest(nifti)
    assert list(cases.case_id) == list(table.case_id)
    assert list(cases.label) == list(table.label) and list(cases.split) == list(table.split)
    assert list(cases.patient_id) == list(table.patient_id)
    assert "mask_path" not in cases and all(p.startswith(str(nifti)) for p in cases.image_path)


def test_read_by_kerasmed_manifest_imagefolder(png):
    cases = read_manifest(png, data=DataConfig(root=str(png), format="imagefolder"))
    table = pd.read_csv(png / "nodules.csv")
    assert sorted(cases.case_id) == sorted(table.case_id)
    assert (cases.label == [c.split("/")[0] for c in cases.case_id]).all()
    assert set(cases.label) == {"nodule", "no_nodule"}


def test_negative_anchors_sit_on_vessels_and_pleura():
    """Unit check of the sampler: vessel negatives have soft tissue in the lung near the centre,
    pleural ones have both lung and non-lung there, and no negative touches a nodule."""
    seen = {"vessel": 0, "pleura": 0, "parenchyma": 0, "nodule": 0}
    size, reach = 48, int(MAX_SHIFT * 48) + 1
    for seed in (case_seed(11, 0), case_seed(11, 1), case_seed(11, 2)):
        case = make_case(seed, shape=(24, 192, 192))
        patches = volume_patches(case, np.random.default_rng(seed), 40, patch_size=size, context=1)
        if patches is None:
            continue
        for p in patches:
            seen[p.anchor] += 1
            box = tuple(slice(c, c + n) for c, n in zip(p.corner, p.array.shape))
            centre = (box[0], slice(p.corner[1] + 23 - reach, p.corner[1] + 25 + reach),
                      slice(p.corner[2] + 23 - reach, p.corner[2] + 25 + reach))
            lung = case.lung_mask.array[centre].astype(bool)
            if p.anchor == "vessel":
                assert (lung & (case.ct.array[centre] > -400)).any()
            elif p.anchor == "pleura":
                assert lung.any() and not lung.all()
            if p.anchor != "nodule":
                assert case.nodule_mask.array[box].sum() == 0 and p.label == "no_nodule"
    assert seen["nodule"] > 0 and seen["vessel"] > 0 and seen["pleura"] > 0
    # Balanced, and about 40% / 30% / 30% of the negatives (binomial spread at 60 negatives).
    negatives = seen["vessel"] + seen["pleura"] + seen["parenchyma"]
    assert seen["nodule"] == negatives
    assert 0.2 <= seen["vessel"] / negatives <= 0.6 and seen["pleura"] / negatives >= 0.12


def test_reuse_and_refusals(nifti, tmp_path):
    stamp = (nifti / "dataset.json").stat().st_mtime_ns
    assert generate_patch_dataset(nifti, **SMALL) == nifti
    assert (nifti / "dataset.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(DataError, match="overwrite"):
        generate_patch_dataset(nifti, **{**SMALL, "seed": 9})
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="must be a folder"):
        generate_patch_dataset(tmp_path / "file", **SMALL)
    for bad, match in [({"format": "jpeg"}, "valid formats"), ({"context": 2}, "must be odd"),
                       ({"patch_size": 256}, "must fit"), ({"num_volumes": 1}, "num_volumes"),
                       ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
                       ({"positive_fraction": 1.5}, "positive_fraction"),
                       ({"nodule_diameter_mm": (10, 5)}, "nodule_diameter_mm"),
                       ({"nodule_kinds": ("calcified",)}, "nodule_kinds"),
                       ({"patches_per_volume": 2.5}, "patches_per_volume")]:
        with pytest.raises(ConfigError, match=match):
            generate_patch_dataset(tmp_path / "bad", **{**SMALL, **bad})
    assert not (tmp_path / "bad").exists()
