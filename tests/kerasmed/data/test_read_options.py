"""`data.read`: reader options for every file of a dataset (check-data, the cache, evaluation,
parity), e.g. which series of a DICOM study folder to read."""

import numpy as np
import pandas as pd
import pytest

from kerasmed.config import config_from_dict
from kerasmed.data.cache import load_cache, spec_key, update_cache
from kerasmed.data.check import check_dataset
from kerasmed.data.manifest import dataset_manifest
from serving.errors import ConfigError
from serving.image import Image
from serving.io import read_image, write_dicom_series, write_nifti
from serving.io.registry import check_read_options

SPACING = (2.5, 0.8, 0.8)


def _study(root):
    """A case whose image is a study folder: a 6-slice CT series and a 2-slice scout series."""
    ct = Image(np.linspace(-1000, 400, 6 * 16 * 16, dtype=np.float32).round().reshape(6, 16, 16),
               SPACING, modality="CT")
    write_dicom_series(ct, root / "case0" / "study" / "axial", uid_entropy="axial")
    scout = Image(np.zeros((2, 16, 16), np.float32), SPACING, origin=(50.0, 0.0, 0.0), modality="CT")
    write_dicom_series(scout, root / "case0" / "study" / "scout", uid_entropy="scout")
    mask = np.zeros((6, 16, 16), np.uint8)
    mask[2:4, 5:9, 5:9] = 1
    write_nifti(ct.with_array(mask, modality="SEG"), root / "case0" / "mask.nii.gz")
    pd.DataFrame([{"case_id": "case0", "image_path": "case0/study",
                   "mask_path": "case0/mask.nii.gz", "split": "train"}]).to_csv(
        root / "manifest.csv", index=False)
    return ct, mask


def test_reader_options_are_checked_against_each_readers_arguments():
    assert check_read_options({"dicom": {"pick": "most_slices"}, "nifti": {"canonical": True}}) == {
        "dicom": {"pick": "most_slices"}, "nifti": {"canonical": True}}
    with pytest.raises(ConfigError, match=r"valid names: \['dicom', 'dicom-file', .*Received: 'dcm'"):
        check_read_options({"dcm": {}})
    with pytest.raises(ConfigError, match=r"reader 'nifti'; valid options: \['canonical', 'volume'\]\. "
                       r"Received: \['pick'\]"):
        check_read_options({"nifti": {"pick": "most_slices"}})
    with pytest.raises(ConfigError, match=r"config key `data.read`: Unknown option of reader 'dicom'"):
        config_from_dict({"data": {"read": {"dicom": {"series": "1.2"}}}})


def test_read_image_applies_only_the_options_of_the_reader_it_picks(tmp_path):
    las = Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (1.0, 1.0, 1.0),
                direction=np.array([[0.0, 0, 1], [0, -1, 0], [1, 0, 0]]))
    path = write_nifti(las, tmp_path / "las.nii.gz")
    options = {"nifti": {"canonical": True}, "dicom": {"pick": "most_slices"}}
    np.testing.assert_array_equal(read_image(path, options=options).array, las.array[:, ::-1, :])
    np.testing.assert_array_equal(read_image(path).array, las.array)
    # A keyword argument wins over the options.
    np.testing.assert_array_equal(read_image(path, options=options, canonical=False).array, las.array)


def test_a_study_folder_case_needs_a_series_rule_and_then_checks_and_caches(tmp_path):
    ct, mask = _study(tmp_path)
    plain = config_from_dict({"data": {"root": str(tmp_path)}})
    [problem] = check_dataset(plain, progress=False).problems.itertuples()
    assert problem.case_id == "case0" and "holds 2 series" in problem.reason

    config = config_from_dict({"data": {"root": str(tmp_path),
                                        "read": {"dicom": {"pick": "most_slices"}}}})
    report = check_dataset(config, progress=False)
    assert report.problems.empty and len(report.good) == 1

    spec = config.preprocessing.spec()
    cached = update_cache(dataset_manifest(config), spec, tmp_path / "cache", progress=False,
                          read=config.data.read)
    [case] = load_cache(cached.index)
    assert case.meta["source_shape"] == [6, 16, 16]
    assert cached.folder.name == spec_key(spec, config.data.read) != spec_key(spec)
    assert (cached.folder / "read.json").is_file()
