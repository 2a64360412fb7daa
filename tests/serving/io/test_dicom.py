import os
import re
import shutil

import numpy as np
import pydicom
import pytest

from serving.errors import DataError
from serving.image import PHI_KEYS, Image
from serving.io.dicom import METADATA_TAGS, read_dicom_series, write_dicom_series

# int16 storage with slope 1 rounds to whole HU: at most 0.5 HU off (plus float32 rounding).
HU_ATOL = 0.5 + 1e-3
GEOMETRY_ATOL = 1e-4


def _ct(shape=(6, 20, 24), direction=None, seed=0):
    rng = np.random.default_rng(seed)
    array = rng.uniform(-1000.0, 1500.0, shape).astype(np.float32)
    return Image(
        array,
        spacing=(2.5, 0.7, 0.8),
        origin=(-100.123456, 20.5, -233.3),
        direction=direction,
        modality="CT",
    )


def _oblique_direction():
    """A rotated axial frame, keeping DICOM's handedness (axis 0 = row x column cosines)."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx @ Image(np.zeros((2, 2, 2)), (1, 1, 1)).direction


def _assert_same_geometry(a: Image, b: Image):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(a.origin, b.origin, atol=GEOMETRY_ATOL)
    np.testing.assert_allclose(a.direction, b.direction, atol=GEOMETRY_ATOL)


@pytest.mark.parametrize("direction", [None, _oblique_direction()], ids=["axial", "oblique"])
def test_round_trip_hu_and_geometry(tmp_path, direction):
    image = _ct(direction=direction)
    folder = write_dicom_series(image, tmp_path / "ct")
    assert sorted(p.name for p in folder.iterdir()) == [f"IM{k:04d}.dcm" for k in range(1, 7)]
    back = read_dicom_series(folder)
    assert back.array.dtype == np.float32
    assert back.modality == "CT"
    np.testing.assert_allclose(back.array, image.array, atol=HU_ATOL, rtol=0)
    _assert_same_geometry(back, image)
    # Index -> LPS agrees voxel by voxel, not only the matrices.
    corner = np.array([5, 19, 23])
    np.testing.assert_allclose(
        back.index_to_physical(corner), image.index_to_physical(corner), atol=1e-3
    )


def test_written_tags_describe_a_ct_series(tmp_path):
    image = _ct()
    folder = write_dicom_series(image, tmp_path / "ct", series_description="unit test")
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    first = datasets[0]
    assert first.SOPClassUID == pydicom.uid.CTImageStorage
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.Modality == "CT" and first.PhotometricInterpretation == "MONOCHROME2"
    assert (first.BitsAllocated, first.PixelRepresentation) == (16, 1)
    assert (first.Rows, first.Columns) == (20, 24)
    assert float(first.RescaleSlope) == 1.0 and float(first.RescaleIntercept) == -1024.0
    np.testing.assert_allclose([float(v) for v in first.PixelSpacing], [0.7, 0.8])
    assert float(first.SliceThickness) == pytest.approx(2.5)
    assert float(first.SpacingBetweenSlices) == pytest.approx(2.5)
    assert first.SeriesDescription == "unit test"
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(ds.get(key)) for ds in datasets}) == 1
    assert len({str(ds.SOPInstanceUID) for ds in datasets}) == 6
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 7))


def test_uids_are_deterministic_with_entropy(tmp_path):
    image = _ct(shape=(2, 8, 8))
    a = write_dicom_series(image, tmp_path / "a", uid_entropy="case-1")
    b = write_dicom_series(image, tmp_path / "b", uid_entropy="case-1")
    c = write_dicom_series(image, tmp_path / "c")
    uids = [pydicom.dcmread(f / "IM0001.dcm").SOPInstanceUID for f in (a, b, c)]
    assert uids[0] == uids[1] != uids[2]


def test_values_outside_int16_are_clipped(tmp_path):
    image = _ct(shape=(2, 4, 4)).with_array(np.full((2, 4, 4), 40000.0, np.float32))
    back = read_dicom_series(write_dicom_series(image, tmp_path / "ct"))
    np.testing.assert_allclose(back.array, 32767 - 1024)


def test_shuffled_files_sort_by_position(tmp_path):
    image = _ct(shape=(7, 10, 12))
    folder = write_dicom_series(image, tmp_path / "ct")
    # Scramble both the file names and InstanceNumber: only the positions may decide the order.
    rng = np.random.default_rng(3)
    paths = sorted(folder.iterdir())
    for new_index, path in zip(rng.permutation(len(paths)), paths, strict=True):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(rng.integers(1, 100))
        ds.save_as(tmp_path / f"x{new_index:02d}.dcm")
        path.unlink()
    for path in tmp_path.glob("x*.dcm"):
        os.replace(path, folder / path.name)
    back = read_dicom_series(folder)
    np.testing.assert_allclose(back.array, image.array, atol=HU_ATOL, rtol=0)
    _assert_same_geometry(back, image)


def test_metadata_is_whitelisted_and_has_no_phi(tmp_path):
    folder = write_dicom_series(_ct(shape=(3, 6, 6)), tmp_path / "ct")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "ANON" and ds.PatientID == "ANON"
        ds.PatientName = "Doe^John"
        ds.PatientBirthDate = "19500101"
        ds.InstitutionName = "General Hospital"
        ds.save_as(path)
    meta = read_dicom_series(folder).metadata
    assert not PHI_KEYS & set(meta)
    assert set(meta) <= set(METADATA_TAGS) | {"NumberOfSlices"}
    assert meta["NumberOfSlices"] == 3 and meta["Modality"] == "CT"
    assert "Doe" not in repr(meta) and "1950" not in repr(meta)


def test_missing_and_empty_folder_errors(tmp_path):
    with pytest.raises(DataError, match="existing folder.*nowhere"):
        read_dicom_series(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no DICOM files.*empty"):
        read_dicom_series(tmp_path / "empty")


def test_non_dicom_file_error_names_the_file(tmp_path):
    folder = write_dicom_series(_ct(shape=(3, 6, 6)), tmp_path / "ct")
    (folder / "IM0002.dcm").write_bytes(b"this is not a DICOM file")
    with pytest.raises(DataError, match=r"IM0002\.dcm.*Received: InvalidDicomError") as info:
        read_dicom_series(folder)
    assert "DICOM Part 10" in str(info.value)
    assert info.value.__cause__ is not None


def test_truncated_file_error_names_the_file(tmp_path):
    folder = write_dicom_series(_ct(shape=(3, 16, 16)), tmp_path / "ct")
    data = (folder / "IM0003.dcm").read_bytes()
    (folder / "IM0003.dcm").write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"complete Rows x Columns pixel data.*IM0003\.dcm"):
        read_dicom_series(folder)


@pytest.mark.parametrize("size", [132, 200, 1000])
def test_file_cut_before_its_pixels_is_not_readable_not_a_missing_uid(tmp_path, size):
    # pydicom reads a file cut in its header as a short dataset; this was reported as a slice
    # lacking SeriesInstanceUID (or PixelSpacing), which sent users looking at the wrong thing.
    folder = write_dicom_series(_ct(shape=(3, 16, 16)), tmp_path / "ct")
    data = (folder / "IM0002.dcm").read_bytes()
    (folder / "IM0002.dcm").write_bytes(data[:size])
    with pytest.raises(DataError, match=rf"readable DICOM image file; `.*IM0002\.dcm` holds no pixel "
                       rf"data: it is truncated or corrupt.*Received: a {size}-byte file"):
        read_dicom_series(folder)


def test_folder_of_garbage_files_names_the_first_file(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm"):
        (folder / name).write_bytes(os.urandom(200))
    with pytest.raises(DataError, match=r"DICOM Part 10 file.*Could not read `.*a\.dcm`"):
        read_dicom_series(folder)


def test_two_series_need_a_series_uid(tmp_path):
    a = write_dicom_series(_ct(shape=(3, 6, 6), seed=1), tmp_path / "a", uid_entropy="a")
    b = write_dicom_series(_ct(shape=(4, 6, 6), seed=2), tmp_path / "b", uid_entropy="b")
    uid_a = str(pydicom.dcmread(a / "IM0001.dcm").SeriesInstanceUID)
    uid_b = str(pydicom.dcmread(b / "IM0001.dcm").SeriesInstanceUID)
    for path in b.iterdir():
        shutil.copy(path, a / f"b_{path.name}")
    with pytest.raises(DataError, match="holds 2 series") as info:
        read_dicom_series(a)
    assert uid_a in str(info.value) and uid_b in str(info.value)
    assert read_dicom_series(a, series_uid=uid_b).shape == (4, 6, 6)
    with pytest.raises(DataError, match="series_uid='1.2.3'"):
        read_dicom_series(a, series_uid="1.2.3")


def test_missing_slice_is_refused(tmp_path):
    folder = write_dicom_series(_ct(shape=(5, 6, 6)), tmp_path / "ct")
    (folder / "IM0003.dcm").unlink()
    with pytest.raises(DataError, match="uniform within 1%"):
        read_dicom_series(folder)


def test_write_refuses_existing_folder_unless_overwrite(tmp_path):
    image = _ct(shape=(2, 6, 6))
    folder = write_dicom_series(image, tmp_path / "ct")
    with pytest.raises(DataError, match="already exists"):
        write_dicom_series(image, folder)
    write_dicom_series(image.with_array(image.array + 10), folder, overwrite=True)
    np.testing.assert_allclose(
        read_dicom_series(folder).array, image.array + 10, atol=HU_ATOL, rtol=0
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]  # no temporary folders left behind


def test_write_refuses_2d_image(tmp_path):
    with pytest.raises(DataError, match="must be 3D"):
        write_dicom_series(Image(np.zeros((4, 4)), (1, 1)), tmp_path / "ct")


def _damage(path, keyword, value):
    """Write an out-of-standard value, as a damaged or badly written file holds it. A value
    pydicom will not write (not a number at all) is written as a placeholder of the same length,
    then swapped in byte for byte."""
    import warnings

    garbled = "x" in value
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about writing the invalid value itself
        setattr(ds, keyword, value.replace("x", "9") if garbled else value)
        ds.save_as(path)
    if garbled:
        data = path.read_bytes()
        assert data.count(value.replace("x", "9").encode()) == 1
        path.write_bytes(data.replace(value.replace("x", "9").encode(), value.encode()))


@pytest.mark.parametrize(
    "keyword, value, rule",
    [
        # Each found by the seeded fuzzer (tests/serving/test_fuzz.py): a ValueError/TypeError
        # from numpy, or an Image with NaN geometry.
        ("ImageOrientationPatient", ["1", "0", "0"], "`ImageOrientationPatient` in `{}` must be 6 "
         "finite numbers. Received: ['1', '0', '0']"),
        ("ImageOrientationPatient", ["1", "0", "0", "0", "1", "0", "0"], "must be 6 finite numbers"),
        ("ImageOrientationPatient", ["nan"] * 6, "must be 6 finite numbers. Received: ['nan', "),
        ("ImageOrientationPatient", ["1e-200"] * 6, "must hold two non-parallel unit vectors in `{}`"),
        ("ImageOrientationPatient", ["1e308", "0", "0", "0", "1e308", "0"], "non-parallel unit vectors"),
        ("ImagePositionPatient", ["0", "0"], "`ImagePositionPatient` in `{}` must be 3 finite numbers"),
        ("ImagePositionPatient", ["inf", "0", "0"], "must be 3 finite numbers. Received: ['inf', "),
        ("PixelSpacing", ["1"], "`PixelSpacing` in `{}` must be 2 positive finite numbers"),
        ("PixelSpacing", ["0", "0"], "must be 2 positive finite numbers. Received: ['0', '0']"),
        ("RescaleIntercept", "0.0\\0.0", "`RescaleIntercept` in `{}` must be 1 finite number"),
        ("RescaleIntercept", "-10x47", "must be 1 finite number. Received: ['-10x47']"),
        ("RescaleSlope", "nan", "`RescaleSlope` in `{}` must be 1 finite number"),
        ("RescaleSlope", "1e38", "must map the stored pixels to finite float32 values"),
    ],
)
def test_damaged_geometry_and_rescale_values_are_refused_naming_file_and_tag(
    tmp_path, keyword, value, rule
):
    folder = write_dicom_series(_ct(shape=(3, 6, 6)), tmp_path / "ct")
    for path in folder.iterdir():  # every slice, so that the slices still agree with each other
        _damage(path, keyword, value)
    with pytest.raises(DataError, match=re.escape(rule.format(folder / "IM0001.dcm"))) as info:
        read_dicom_series(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["nan", "-1", "12.3x5"])
def test_single_slice_gap_must_be_a_finite_positive_number(tmp_path, value):
    folder = write_dicom_series(_ct(shape=(1, 6, 6)), tmp_path / "ct")
    _damage(folder / "IM0001.dcm", "SpacingBetweenSlices", value)
    with pytest.raises(DataError, match=r"`SpacingBetweenSlices` in `.*IM0001\.dcm` must be"):
        read_dicom_series(folder)


def test_unknown_value_representation_is_refused_naming_file_and_tag(tmp_path):
    # A flipped bit turns the VR "DS" of PixelSpacing into an unknown one; pydicom only notices
    # when the value is first read, after `dcmread` has returned.
    folder = write_dicom_series(_ct(shape=(2, 6, 6)), tmp_path / "ct")
    path = folder / "IM0001.dcm"
    data = path.read_bytes()
    element = b"\x28\x00\x30\x00DS"
    assert data.count(element) == 1
    path.write_bytes(data.replace(element, b"\x28\x00\x30\x00DQ"))
    with pytest.raises(DataError, match=r"`PixelSpacing` in `.*IM0001\.dcm` must be a readable "
                       r"DICOM value\. Received: NotImplementedError: Unknown Value Representation"):
        read_dicom_series(folder)
