import gzip

import nibabel as nib
import numpy as np
import pytest

from serving.errors import DataError
from serving.image import Image
from serving.io.dicom import read_dicom_series, write_dicom_series
from serving.io.nifti import read_nifti, write_nifti

# The NIfTI header stores the affine as float32.
GEOMETRY_ATOL = 1e-4


def _oblique_direction():
    """Column a = LPS unit vector of array axis a, for a frame rotated about two axes."""
    a, b = np.deg2rad(25.0), np.deg2rad(40.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rz @ ry @ Image(np.zeros((2, 2, 2)), (1, 1, 1)).direction


def _image(dtype=np.float32, direction=None, modality="CT"):
    rng = np.random.default_rng(0)
    array = rng.uniform(-1000, 1000, (5, 7, 9)).astype(dtype)
    return Image(
        array,
        spacing=(2.5, 0.75, 0.8),
        origin=(-120.5, 33.25, -210.0),
        direction=direction,
        modality=modality,
    )


def _assert_same(a: Image, b: Image):
    assert a.shape == b.shape and a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.spacing, b.spacing, atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(a.origin, b.origin, atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(a.direction, b.direction, atol=GEOMETRY_ATOL)


@pytest.mark.parametrize("direction", [None, _oblique_direction()], ids=["axial", "oblique"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_float_image(tmp_path, direction, suffix):
    image = _image(direction=direction)
    back = read_nifti(write_nifti(image, tmp_path / f"ct{suffix}"))
    _assert_same(back, image)
    assert back.modality == "CT"


def test_mask_keeps_uint8_and_bool_becomes_uint8(tmp_path):
    mask = _image().with_array((_image().array > 0).astype(np.uint8), modality="SEG")
    back = read_nifti(write_nifti(mask, tmp_path / "mask.nii.gz"))
    _assert_same(back, mask)
    assert back.modality == "SEG"
    as_bool = read_nifti(write_nifti(mask.with_array(mask.array > 0), tmp_path / "bool.nii.gz"))
    assert as_bool.array.dtype == np.uint8
    np.testing.assert_array_equal(as_bool.array, mask.array)


def test_file_is_ras_with_xyz_index_order(tmp_path):
    """What 3D Slicer or ITK sees: voxel (i, j, k) of the file is array voxel [k, j, i] at RAS."""
    image = _image(direction=_oblique_direction())
    path = write_nifti(image, tmp_path / "ct.nii.gz")
    nifti = nib.load(path)
    data = np.asanyarray(nifti.dataobj)
    assert data.shape == (9, 7, 5)
    assert int(nifti.header["sform_code"]) == 1 and int(nifti.header["qform_code"]) == 1
    np.testing.assert_allclose(nifti.header.get_qform(), nifti.header.get_sform(), atol=1e-4)
    for i, j, k in [(0, 0, 0), (8, 0, 4), (3, 6, 2)]:
        assert data[i, j, k] == image.array[k, j, i]
        ras = nifti.affine @ np.array([i, j, k, 1.0])
        lps = image.index_to_physical([k, j, i])
        np.testing.assert_allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-3)


def test_mask_from_dicom_overlays_the_dicom(tmp_path):
    ct = _image()
    series = read_dicom_series(write_dicom_series(ct, tmp_path / "dicom"))
    mask = series.with_array((series.array > 0).astype(np.uint8), modality="SEG")
    back = read_nifti(write_nifti(mask, tmp_path / "mask.nii.gz"))
    assert back.same_geometry(series, atol=GEOMETRY_ATOL)
    np.testing.assert_array_equal(back.array, mask.array)


def test_corrupt_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"definitely not a nifti header" * 3))
    with pytest.raises(DataError, match=r"garbage\.nii\.gz.*complete NIfTI") as info:
        read_nifti(bad)
    assert info.value.__cause__ is not None

    good = write_nifti(_image(), tmp_path / "ct.nii")
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(DataError, match=r"truncated\.nii"):
        read_nifti(truncated)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DataError, match="existing NIfTI file"):
        read_nifti(tmp_path / "none.nii.gz")
    with pytest.raises(DataError, match=r"\.nii or \.nii\.gz"):
        write_nifti(_image(), tmp_path / "ct.mha")
    with pytest.raises(DataError, match="must be 3D"):
        write_nifti(Image(np.zeros((3, 3)), (1, 1)), tmp_path / "flat.nii")


def test_write_replaces_atomically(tmp_path):
    path = tmp_path / "ct.nii.gz"
    write_nifti(_image(), path)
    write_nifti(_image().with_array(np.zeros((5, 7, 9), np.float32)), path)
    assert read_nifti(path).array.max() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]
