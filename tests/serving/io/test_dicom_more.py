"""DICOM beyond a plain CT series (issue 7): one file (slice, radiograph, enhanced multi-frame,
compressed), a study folder, and gaps/duplicates/uneven spacing.

Expected values are computed here from pydicom's own `pixel_array` and the tags, by hand, never
copied from the reader. Files pydicom does not ship (a MONOCHROME1 radiograph, an enhanced MR with
per-frame geometry, an MR with a non-unit slope, a study folder) are built with pydicom.
"""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from serving.errors import DataError
from serving.io import read_dicom_file, read_image
from serving.io.registry import format_of
from tests.helpers import assert_allclose
from tests.serving.io.dicom_builders import (
    _assert_no_phi,
    _decoder_available,
    _enhanced_mr,
    _frame,
    _image_dataset,
    _rescaled,
    _rotation,
    _save,
    _shipped,
)


def test_ct_slice_with_hu_intercept_matches_pydicom_and_tags():
    path = _shipped("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleIntercept) == -1024.0  # the HU intercept this test is about
    assert format_of(path) == "dicom-file"
    image = read_image(path)
    assert image.shape == (1, 128, 128) and image.modality == "CT"
    assert image.array.dtype == np.float32
    assert_allclose(image.array[0], _rescaled(ds), atol=0)
    row, col = np.array(ds.ImageOrientationPatient[:3]), np.array(ds.ImageOrientationPatient[3:])
    assert_allclose(image.direction, _frame(np.cross(row, col), row, col))
    assert_allclose(image.origin, [float(v) for v in ds.ImagePositionPatient])
    expected_gap = float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
    assert_allclose(image.spacing, [expected_gap, *map(float, ds.PixelSpacing)])
    _assert_no_phi(image)  # CT_small carries a real-looking PatientName
    assert str(ds.PatientName) not in repr(image.metadata)


@pytest.mark.parametrize(
    "twin",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm"],
)
def test_lossless_twins_read_exactly_like_the_uncompressed_file(twin):
    reference = read_dicom_file(_shipped("MR_small.dcm"))
    ds = pydicom.dcmread(_shipped(twin))
    # The project's dependencies bring the decoders: Pillow (JPEG 2000), pyjpegls (JPEG-LS, with
    # highdicom), pydicom itself (RLE).
    assert _decoder_available(ds.file_meta.TransferSyntaxUID), ds.file_meta.TransferSyntaxUID.name
    image = read_dicom_file(_shipped(twin))
    np.testing.assert_array_equal(image.array, reference.array)
    assert image.same_geometry(reference, atol=0)
    assert_allclose(reference.array[0], _rescaled(pydicom.dcmread(_shipped("MR_small.dcm"))), atol=0)


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "JPEG2000.dcm"])
def test_jpeg2000_files_match_pydicoms_pixels(name):
    ds = pydicom.dcmread(_shipped(name))
    assert _decoder_available(ds.file_meta.TransferSyntaxUID), "Pillow decodes JPEG 2000"
    image = read_image(_shipped(name))
    # 693_J2KI is a CT slice (3D, one slice); JPEG2000.dcm an NM frame without plane geometry (2D).
    assert_allclose(image.array.reshape(ds.pixel_array.shape), _rescaled(ds), atol=0)
    assert image.ndim == (3 if "ImagePositionPatient" in ds else 2)


def test_missing_decoder_names_transfer_syntax_and_package(monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder

    path = _shipped("MR_small_jpeg_ls_lossless.dcm")
    decoder = get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    # As on a machine without pyjpegls or pylibjpeg: no JPEG-LS plugin loads.
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pyjpegls": ("pyjpegls",)})
    with pytest.raises(DataError) as info:
        read_image(path)
    message = str(info.value)
    assert "JPEG-LS Lossless Image Compression" in message and "1.2.840.10008.1.2.4.80" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message and "\n" not in message


def test_missing_decoder_simulated_for_rle(monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import RLELossless

    decoder = get_decoder(RLELossless)
    # As if no RLE plugin could load: pydicom's own decoding fails the same way.
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pydicom": ("numpy",)})
    with pytest.raises(DataError, match=r"MR_small_RLE\.dcm` must be decodable.*'RLE Lossless' "
                       r"\(1\.2\.840\.10008\.1\.2\.5\): install one with `pip install pylibjpeg "
                       r"pylibjpeg-rle`.*Received: TransferSyntaxUID=1\.2\.840\.10008\.1\.2\.5"):
        read_dicom_file(_shipped("MR_small_RLE.dcm"))


def test_rgb_dicom_in_a_series_folder_is_refused_clearly(tmp_path):
    for z, name in enumerate("ab"):  # two colour planes that would otherwise stack
        ds = pydicom.dcmread(_shipped("SC_rgb_small_odd.dcm"))
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{z}"
        ds.save_as(tmp_path / f"{name}.dcm")
    with pytest.raises(DataError, match=r"A slice of a series must be greyscale.*colour, which is "
                       r"read one file at a time.*Received: SamplesPerPixel=3"):
        read_image(tmp_path)


def test_non_image_file_is_refused_by_the_file_reader():
    with pytest.raises(DataError, match=r"must be a DICOM image object.*Basic Text SR Storage"):
        read_dicom_file(_shipped("reportsi.dcm"))


def test_suffixless_dicom_file_is_dispatched_to_the_file_reader(tmp_path):
    path = tmp_path / "IM000001"
    shutil.copy(_shipped("CT_small.dcm"), path)
    assert format_of(path) == "dicom-file"
    assert read_image(path).shape == (1, 128, 128)


# --- Radiographs: spacing precedence and MONOCHROME1 ---------------------------------------------


def test_monochrome1_radiograph_is_inverted_over_the_stored_range(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, (6, 5))
    raw[0, 0], raw[0, 1] = 0, 4095
    ds = _image_dataset("CR", raw, bits_stored=12, signed=False, photometric="MONOCHROME1",
                        RescaleSlope="2", RescaleIntercept="-100", ImagerPixelSpacing=["0.15", "0.2"])
    path = _save(ds, tmp_path / "cr.dcm", ComputedRadiographyImageStorage)
    image = read_image(path)
    # Hand computation: stored range of 12 unsigned bits is [0, 4095]; invert, then rescale.
    expected = 2.0 * (4095 - raw) - 100.0
    assert image.shape == (6, 5) and image.ndim == 2
    np.testing.assert_array_equal(image.array, expected.astype(np.float32))
    assert image.array[0, 0] == 2 * 4095 - 100 and image.array[0, 1] == -100  # white -> dense
    assert image.spacing == (0.15, 0.2)
    assert image.metadata["pixel_spacing_tag"] == "ImagerPixelSpacing"
    assert any("MONOCHROME1" in note for note in image.metadata["notes"])
    _assert_no_phi(image)


def test_pixel_spacing_wins_over_imager_pixel_spacing_and_signed_monochrome1(tmp_path):
    raw = np.array([[-512, -1, 0], [1, 100, 511]])
    ds = _image_dataset("DX", raw, bits_stored=10, signed=True, photometric="MONOCHROME1",
                        PixelSpacing=["0.1", "0.1"], ImagerPixelSpacing=["0.12", "0.12"],
                        PixelSpacingCalibrationType="GEOMETRY")
    image = read_image(_save(ds, tmp_path / "dx.dcm", DigitalXRayImageStorageForPresentation))
    # 10 signed bits store [-512, 511]: out = -512 + 511 - raw.
    np.testing.assert_array_equal(image.array, (-1 - raw).astype(np.float32))
    assert image.spacing == (0.1, 0.1) and image.metadata["pixel_spacing_tag"] == "PixelSpacing"
    assert image.metadata["PixelSpacingCalibrationType"] == "GEOMETRY"
    assert any("ImagerPixelSpacing [0.12, 0.12] (at the detector) differs" in n
               for n in image.metadata["notes"])


def test_radiograph_without_spacing_is_flagged_as_assumed(tmp_path):
    ds = _image_dataset("CR", np.zeros((4, 4), int), signed=False)
    image = read_image(_save(ds, tmp_path / "cr.dcm", ComputedRadiographyImageStorage))
    assert image.spacing == (1.0, 1.0) and image.assumed_spacing_axes == (0, 1)


def test_modality_lut_sequence_with_monochrome1(tmp_path):
    raw = np.array([[0, 1, 2], [100, 4000, 4095]])
    lut = (np.arange(4096) * 3) // 2 + 7
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = lut.astype("<u2").tobytes()
    ds = _image_dataset("CR", raw, bits_stored=12, signed=False, photometric="MONOCHROME1",
                        ModalityLUTSequence=Sequence([item]))
    ds.ModalityLUTSequence[0]["LUTData"].VR = "OW"
    image = read_image(_save(ds, tmp_path / "cr.dcm", ComputedRadiographyImageStorage))
    # LUT output range over stored values 0..4095 is [lut[0], lut[4095]] = [7, 6149].
    expected = (7 + 6149) - lut[raw]
    np.testing.assert_array_equal(image.array, expected.astype(np.float32))


# --- Enhanced multi-frame -----------------------------------------------------------------------


@pytest.mark.parametrize("per_frame_orientation", [False, True], ids=["shared", "per-frame"])
def test_enhanced_mr_with_per_frame_geometry_and_rescale(tmp_path, per_frame_orientation):
    rotation = _rotation()
    row, col, normal = rotation.T
    origin = np.array([-80.0, 12.5, 40.0])
    # Frames stored out of order: positions 2, 0, 3, 1 gaps of 2.5 mm along the normal.
    order = [2, 0, 3, 1]
    positions = [origin + 2.5 * k * normal for k in order]
    slopes, intercepts = [0.5, 2.0, 1.25, 3.0], [-10.0, 0.0, 5.0, -1.0]
    stored = np.random.default_rng(1).integers(0, 4096, (4, 6, 7))
    path = _enhanced_mr(tmp_path / "emr.dcm", stored, positions, [*row, *col], slopes, intercepts,
                        per_frame_orientation=per_frame_orientation)
    image = read_image(path)
    assert image.shape == (4, 6, 7) and image.modality == "MR"
    for k in range(4):  # frame i sits at position order[i]
        i = order.index(k)
        assert_allclose(image.array[k], stored[i] * slopes[i] + intercepts[i], atol=1e-4)
    assert_allclose(image.spacing, (2.5, 0.6, 0.7))
    assert_allclose(image.origin, origin, atol=1e-6)
    assert_allclose(image.direction, _frame(normal, row, col), atol=1e-6)
    assert image.metadata["NumberOfSlices"] == 4
    _assert_no_phi(image)


def test_enhanced_frames_at_one_position_are_refused_naming_frames(tmp_path):
    row, col, normal = _rotation().T
    positions = [np.zeros(3), normal * 2.0, normal * 2.0]
    path = _enhanced_mr(tmp_path / "emr.dcm", np.zeros((3, 4, 4), int), positions, [*row, *col],
                        [1, 1, 1], [0, 0, 0])
    with pytest.raises(DataError, match=r"`frame 2 of .*emr\.dcm` and `frame 3 of .*emr\.dcm` coincide"):
        read_dicom_file(path)


def test_enhanced_frame_without_position_is_refused(tmp_path):
    row, col, normal = _rotation().T
    path = _enhanced_mr(tmp_path / "emr.dcm", np.zeros((2, 4, 4), int), [np.zeros(3), normal],
                        [*row, *col], [1, 1], [0, 0])
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    ds.save_as(path)
    with pytest.raises(DataError, match=r"`frame 2 of .*emr\.dcm` lacks \['PlanePositionSequence'\]"):
        read_dicom_file(path)


def test_legacy_multiframe_without_functional_groups_is_a_frame_stack_without_geometry(tmp_path):
    # Once refused; now read as frames, as a colour cine is (issue 15: real-file quirks).
    stored = np.arange(3 * 4 * 4).reshape(3, 4, 4) - 20
    ds = _image_dataset("OT", stored, NumberOfFrames=3, RescaleSlope="2", RescaleIntercept="5")
    path = _save(ds, tmp_path / "sc.dcm", MultiFrameGrayscaleWordSecondaryCaptureImageStorage)
    image = read_image(path)
    assert image.shape == (3, 4, 4)
    np.testing.assert_array_equal(image.array, _rescaled(pydicom.dcmread(path)).astype(np.float32))
    assert image.spacing == (1.0, 1.0, 1.0) and image.assumed_spacing_axes == (0, 1, 2)
    assert image.origin == (0.0, 0.0, 0.0)
    assert [n for n in image.metadata["notes"] if "without per-frame functional groups" in n] == [
        "Multi-frame Grayscale Word Secondary Capture Image Storage without per-frame functional "
        "groups: 3 frames stacked on axis 0 without patient geometry (origin 0, default direction, "
        "frame spacing 1.0 assumed); in-plane spacing from the top-level tags; rescale from the "
        "top-level tags"
    ]
    _assert_no_phi(image)


# --- Series: non-unit slope, study folders, gaps, duplicates, orientation -------------------------
