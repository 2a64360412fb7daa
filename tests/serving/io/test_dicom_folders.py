"""DICOM folders and studies (issue 7): series chosen by UID or rule, non-image objects skipped,
and gaps, duplicates, mixed orientations and uneven spacing named or resampled."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    GrayscaleSoftcopyPresentationStateStorage,
    MRImageStorage,
    generate_uid,
)

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import read_dicom_series, read_image, write_dicom_series
from tests.helpers import assert_allclose
from tests.serving.io.dicom_builders import (
    _assert_no_phi,
    _image_dataset,
    _save,
    _shipped,
)


def _mr_series(folder, n=4, slope=2.5, intercept=-10.0, gaps=None, seed=0, series_uid=None):
    """Single-frame MR Image Storage files (non-unit slope), axial, positions along +z."""
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    z = np.cumsum([0.0, *(gaps or [3.0] * (n - 1))])
    stored = rng.integers(0, 2000, (len(z), 5, 6))
    for k in rng.permutation(len(z)):  # written in shuffled order and names
        ds = _image_dataset("MR", stored[k], series_uid=series_uid, ImagePositionPatient=["-50",
                            "20", f"{z[k]:.4f}"], ImageOrientationPatient=["1", "0", "0", "0", "1", "0"],
                            PixelSpacing=["0.9", "0.8"], SliceThickness="3", RescaleSlope=str(slope),
                            RescaleIntercept=str(intercept), SeriesNumber=7, InstanceNumber=int(k) + 1)
        _save(ds, folder / f"mr_{rng.integers(1e6):06d}_{k}.dcm", MRImageStorage)
    return stored, z, series_uid


def test_mr_series_with_non_unit_slope(tmp_path):
    stored, z, _ = _mr_series(tmp_path / "mr")
    image = read_image(tmp_path / "mr")
    assert_allclose(image.array, stored * 2.5 - 10.0, atol=0)
    assert_allclose(image.spacing, (3.0, 0.9, 0.8))
    assert image.modality == "MR"
    assert_allclose(image.origin, (-50.0, 20.0, 0.0))
    _assert_no_phi(image)


def _presentation_state(path, study_uid):
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.PatientName = "PR", "Doe^Jane"
    ds.ContentLabel, ds.PresentationCreationDate = "GSPS", "20240101"
    return _save(ds, path, GrayscaleSoftcopyPresentationStateStorage)


def _study(tmp_path):
    """A study folder: a 5-slice CT and a 6-slice MR series in subfolders, an SR and a GSPS."""
    study = tmp_path / "study"
    ct = Image(np.random.default_rng(3).uniform(-1000, 1000, (5, 6, 7)).astype(np.float32),
               (2.0, 0.7, 0.7), origin=(1.0, 2.0, 3.0), modality="CT")
    write_dicom_series(ct, study / "series_ct", uid_entropy="ct")
    stored, _, mr_uid = _mr_series(study / "series_mr", n=6)
    shutil.copy(_shipped("reportsi.dcm"), study / "report.dcm")
    _presentation_state(study / "series_pr" / "gsps.dcm", "1.2.826.0.1.3680043.8.498.1")
    ct_uid = str(pydicom.dcmread(study / "series_ct" / "IM0001.dcm").SeriesInstanceUID)
    return study, ct, ct_uid, stored, mr_uid


def test_study_folder_refuses_to_guess_by_default_and_lists_the_series(tmp_path):
    study, _, ct_uid, _, mr_uid = _study(tmp_path)
    with pytest.raises(DataError) as info:
        read_image(study)
    message = str(info.value)
    assert "holds 2 series" in message and "pick='most_slices'" in message
    assert f"{ct_uid} (CT, 5 slices" in message and f"{mr_uid} (MR, 6 slices" in message
    assert "Received: series_uid=None" in message and "\n" not in message


def test_study_folder_pick_most_slices_prefers_ct_and_notes_what_it_skipped(tmp_path):
    study, ct, _, _, _ = _study(tmp_path)
    image = read_image(study, pick="most_slices")
    # The MR series has more slices, but a CT series is preferred.
    assert image.modality == "CT" and image.shape == (5, 6, 7)
    assert_allclose(image.array, ct.array, atol=0.5 + 1e-3)  # int16 storage rounds to whole HU
    notes = image.metadata["notes"]
    assert any("skipped `report.dcm`: Basic Text SR Storage" in n for n in notes)
    assert any("skipped `series_pr/gsps.dcm`: Grayscale Softcopy Presentation State" in n for n in notes)
    assert any("1 other image series not read: MR, 6 slices, SeriesNumber 7" in n for n in notes)
    assert not any(str(tmp_path) in n for n in notes)  # relative names only
    _assert_no_phi(image)


def test_study_folder_series_uid_reads_that_series(tmp_path):
    study, _, _, stored, mr_uid = _study(tmp_path)
    image = read_dicom_series(study, series_uid=mr_uid)
    assert image.modality == "MR"
    assert_allclose(image.array, stored * 2.5 - 10.0, atol=0)


def test_pick_rule_must_be_known(tmp_path):
    with pytest.raises(ConfigError, match=r"`pick` must be None or one of \['most_slices'\]"):
        read_dicom_series(tmp_path, pick="largest")


def test_folder_of_non_image_objects_is_refused(tmp_path):
    shutil.copy(_shipped("reportsi.dcm"), tmp_path / "sr.dcm")
    with pytest.raises(DataError, match=r"must hold at least one DICOM image series.*1 non-image"):
        read_image(tmp_path)


def test_missing_slice_names_the_files_around_the_gap_and_can_be_interpolated(tmp_path):
    stored, z, _ = _mr_series(tmp_path / "mr", n=5, slope=1.0, intercept=0.0)
    (victim,) = [p for p in (tmp_path / "mr").iterdir() if p.stem.endswith("_2")]
    below, above = (next((tmp_path / "mr").glob(f"*_{k}.dcm")).name for k in (1, 3))
    victim.unlink()
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "mr")
    message = str(info.value)
    assert "6.0000 mm between" in message and "missing slice" in message
    assert below in message and above in message and "resample_uneven=True" in message
    image = read_image(tmp_path / "mr", resample_uneven=True)
    assert image.shape == (5, 5, 6)
    assert_allclose(image.spacing, (3.0, 0.9, 0.8))
    expected = stored.astype(np.float64)
    expected[2] = (stored[1] + stored[3]) / 2  # halfway between its neighbours
    assert_allclose(image.array, expected, atol=1e-4)
    assert any("resampled 4 unevenly spaced slices onto 5 slices every 3.0000 mm" in n
               and below in n and above in n for n in image.metadata["notes"])


def test_uneven_spacing_is_refused_or_resampled_linearly(tmp_path):
    gaps = [2.0, 2.0, 2.6, 2.0, 1.4]  # median 2.0; extent 10 -> 6 slices every 2.0 mm
    stored, z, _ = _mr_series(tmp_path / "mr", gaps=gaps, slope=1.0, intercept=0.0)
    with pytest.raises(DataError, match=r"uniform within 1%.*2\.6000 mm between.*uneven spacing; "
                       r"2 irregular gaps"):
        read_image(tmp_path / "mr")
    image = read_image(tmp_path / "mr", resample_uneven=True)
    grid = np.arange(6) * 2.0
    # Independent linear interpolation, voxel by voxel, with numpy's interp.
    expected = np.apply_along_axis(lambda column: np.interp(grid, z, column), 0, stored.astype(float))
    assert image.shape == (6, 5, 6)
    # float32 output: one ulp at values near 2000 is 1.2e-4, and the weights differ in the last bits.
    assert_allclose(image.array, expected, atol=1e-3)
    assert_allclose(image.spacing, (2.0, 0.9, 0.8))
    assert_allclose(image.origin, (-50.0, 20.0, 0.0))


def test_two_files_at_one_position_are_refused_naming_both(tmp_path):
    _mr_series(tmp_path / "mr", n=3)
    first = sorted((tmp_path / "mr").glob("*_0.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "mr" / "other.dcm")
    with pytest.raises(DataError, match=rf"`.*({first.name}|other\.dcm)` and `.*"
                       rf"({first.name}|other\.dcm)` coincide\. Received: position"):
        read_image(tmp_path / "mr")
    shutil.copy(first, tmp_path / "mr" / "other.dcm")  # the same instance copied twice
    with pytest.raises(DataError, match=r"coincide \(one SOPInstanceUID: a file copied twice\)"):
        read_image(tmp_path / "mr")


def test_mixed_orientations_are_refused_naming_the_files(tmp_path):
    _mr_series(tmp_path / "mr", n=4)
    odd = sorted((tmp_path / "mr").iterdir())[2]
    ds = pydicom.dcmread(odd)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.save_as(odd)
    with pytest.raises(DataError, match=rf"share Rows, Columns and ImageOrientationPatient; "
                       rf"`.*{odd.name}` differs from"):
        read_image(tmp_path / "mr")


def test_single_slice_folder_without_thickness_flags_the_assumed_gap(tmp_path):
    _mr_series(tmp_path / "mr", n=1)
    path = next((tmp_path / "mr").iterdir())
    ds = pydicom.dcmread(path)
    del ds.SliceThickness
    ds.save_as(path)
    image = read_image(tmp_path / "mr")
    assert image.shape == (1, 5, 6) and image.spacing[0] == 1.0
    assert image.assumed_spacing_axes == (0,)
