"""DICOM folders against pydicom's shipped `dicomdirtests`: real CT and MR series (16x16 pixels,
from scanners), read back against pydicom's own pixels with the rescale applied here by hand."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from serving.errors import DataError
from serving.io import read_image

STUDIES = Path(get_testdata_file("DICOMDIR")).parent


def _by_hand(folder: Path):
    """HU slices sorted along the slice normal, and the first slice's position, from pydicom."""
    slices = []
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        row, col = np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))
        normal = np.cross(row, col)
        position = np.asarray(ds.ImagePositionPatient, float)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append((float(position @ normal), position, hu, [float(s) for s in ds.PixelSpacing]))
    slices.sort(key=lambda s: s[0])
    return slices


def test_real_ct_series_reads_like_pydicom_with_the_rescale_by_hand():
    folder = STUDIES / "98892001" / "CT5N"
    slices = _by_hand(folder)
    image = read_image(folder)
    assert image.shape == (5, 16, 16) and image.modality == "CT"
    np.testing.assert_array_equal(image.array, np.stack([s[2] for s in slices]))
    gaps = np.diff([s[0] for s in slices])
    np.testing.assert_allclose(gaps, 2.5, atol=1e-4)
    np.testing.assert_allclose(image.spacing, [2.5, *slices[0][3]], atol=1e-4)
    np.testing.assert_allclose(image.origin, slices[0][1], atol=1e-4)
    # The last slice lies where its own file says.
    np.testing.assert_allclose(image.index_to_physical([4, 0, 0]), slices[-1][1], atol=1e-4)


def test_real_series_with_a_gap_is_refused_naming_the_files_around_it():
    """77654033/CT2: one slice at z = -99.5 mm, three at 103-105.5 mm."""
    with pytest.raises(DataError, match=r"17106.*17136|17136.*17106"):
        read_image(STUDIES / "77654033" / "CT2")


def test_real_radial_mr_series_is_refused_for_mixed_orientations():
    """98892003/MR700: radial slices, each with its own orientation."""
    with pytest.raises(DataError, match=r"must share Rows, Columns and ImageOrientationPatient.*"
                       r"Received: 16x16, \[0\.959171, 0\.282838, .* against 16x16, \[0\.653996"):
        read_image(STUDIES / "98892003" / "MR700")


def test_real_study_folder_needs_a_series_or_picks_the_ct_with_most_slices():
    study = STUDIES / "98892001"
    with pytest.raises(DataError, match=r"series"):
        read_image(study)
    picked = read_image(study, pick="most_slices")
    np.testing.assert_array_equal(picked.array, read_image(study / "CT5N").array)
