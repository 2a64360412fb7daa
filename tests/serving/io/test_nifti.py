import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
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


NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def _nibabel_position_lps(affine, ijk):
    """LPS mm of voxel (i, j, k) computed from the file's affine with nibabel's own convention."""
    ras = nib.affines.apply_affine(affine, np.asarray(ijk, float))
    return ras * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("canonical", [False, True])
def test_oblique_4d_sample_file_volume_matches_nibabel(canonical):
    """nibabel's example4d.nii.gz: a real oblique scan with two volumes."""
    path = NIBABEL_DATA / "example4d.nii.gz"
    reference = nib.load(path)
    data = np.asanyarray(reference.dataobj)  # (i, j, k, t), scaling applied by nibabel
    image = read_nifti(path, volume=1, canonical=canonical)
    assert sorted(image.shape) == sorted(data.shape[:3])
    rng = np.random.default_rng(0)
    for ijk in rng.integers(0, data.shape[:3], size=(20, 3)):
        lps = _nibabel_position_lps(reference.affine, ijk)
        index = np.round(image.physical_to_index(lps)).astype(int)
        np.testing.assert_allclose(image.index_to_physical(index), lps, atol=GEOMETRY_ATOL)
        assert image.array[tuple(index)] == data[tuple(ijk) + (1,)]
    assert not np.allclose(np.abs(image.direction), np.round(np.abs(image.direction)))  # oblique


def test_4d_file_needs_a_volume_in_range():
    path = NIBABEL_DATA / "example4d.nii.gz"
    with pytest.raises(DataError, match=r"example4d\.nii\.gz.*2 volumes.*volume="):
        read_nifti(path)
    with pytest.raises(DataError, match=r"`volume` must index.*0 to 1.*volume=2"):
        read_nifti(path, volume=2)
    with pytest.raises(DataError, match=r"`volume` must index.*volume=0"):
        read_nifti(NIBABEL_DATA / "anatomical.nii", volume=0)


def test_las_sample_file_reads_in_canonical_order():
    """nibabel's anatomical.nii is stored L-A-S (i to the left, j to the front, k up): canonical
    order has rows running to the back, so only j is flipped."""
    path = NIBABEL_DATA / "anatomical.nii"
    reference = nib.load(path)
    data = np.asanyarray(reference.dataobj)
    stored, canonical = read_nifti(path), read_nifti(path, canonical=True)
    np.testing.assert_allclose(canonical.direction, Image(np.zeros((2, 2, 2)), (1, 1, 1)).direction,
                               atol=1e-12)
    assert canonical.spacing == stored.spacing == (2.0, 2.0, 2.0)
    # The first canonical voxel is the file's i = 0, most anterior (j = last), k = 0 one.
    nj = data.shape[1]
    np.testing.assert_allclose(canonical.origin,
                               _nibabel_position_lps(reference.affine, (0, nj - 1, 0)),
                               atol=GEOMETRY_ATOL)
    np.testing.assert_array_equal(canonical.array, data.transpose(2, 1, 0)[:, ::-1, :])
    np.testing.assert_array_equal(stored.array, data.transpose(2, 1, 0))


def test_dicom_series_to_nifti_and_back_keeps_hu_exactly(tmp_path):
    """DICOM series -> Image -> NIfTI -> Image: HU exact (checked against pydicom's stored values
    with the rescale applied by hand), spacing and origin within 1e-4 mm, on an oblique grid."""
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 2000, (5, 7, 9)).astype(np.float32)
    ct = Image(hu, spacing=(2.5, 0.75, 0.8), origin=(-120.5, 33.25, -210.0),
               direction=_oblique_direction(), modality="CT")
    folder = write_dicom_series(ct, tmp_path / "dicom")
    series = read_dicom_series(folder)
    by_hand = []
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        position = np.asarray(ds.ImagePositionPatient, float)
        by_hand.append((position @ ct.direction[:, 0],
                        ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
    by_hand = np.stack([a for _, a in sorted(by_hand, key=lambda t: t[0])])
    np.testing.assert_array_equal(series.array, by_hand)
    np.testing.assert_array_equal(series.array, hu)  # whole HU survive int16 storage

    back = read_nifti(write_nifti(series, tmp_path / "ct.nii.gz"))
    np.testing.assert_array_equal(back.array, hu)
    _assert_same(back, series)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(back.origin, ct.origin, atol=GEOMETRY_ATOL)
