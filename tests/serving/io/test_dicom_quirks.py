"""Real-file quirks (issue 15, point 5): files that real equipment and anonymisers write, read with
the assumption recorded instead of refused, and the damage that is still refused.

- A spacing tag of `0.000\\0.000` (what equipment writes when it does not know), or zero, negative
  or non-finite values, on a file with no 3D geometry: spacing 1.0 assumed, one note.
- An Enhanced MR whose functional group sequences were stripped: a frame stack with assumed
  geometry, one note.

Expected values come from pydicom's `pixel_array` and the tags, never from the reader.
"""

import re
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation

from serving.errors import DataError
from serving.image import Image, axial_direction
from serving.io import read_dicom_file, read_dicom_series, read_image, write_dicom_series
from tests.serving.io.dicom_builders import (
    _assert_no_phi,
    _enhanced_mr,
    _image_dataset,
    _rescaled,
    _rotation,
    _save,
)

UNKNOWN_CR_NOTE = (
    "PixelSpacing ['0.000', '0.000'] is not a usable spacing (zero, negative or not finite): "
    "spacing assumed to be 1.0 per pixel"
)
STRIPPED_EMR_NOTE = (
    "Enhanced MR Image Storage without per-frame functional groups: 4 frames stacked on axis 0 "
    "without patient geometry (origin 0, default direction, frame spacing 1.0 assumed); in-plane "
    "spacing from {spacing}; rescale from {rescale}"
)


def _with_odd_values(ds, **tags):
    """Set tags to values pydicom warns about when written (NaN, inf): the test's own writing of
    odd values, not the reader's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
    return ds


def _cr(tmp_path, **tags):
    raw = np.random.default_rng(3).integers(0, 4096, (6, 5))
    ds = _image_dataset("CR", raw, bits_stored=12, signed=False, RescaleSlope="0.5",
                        RescaleIntercept="-8")
    return _save(_with_odd_values(ds, **tags), tmp_path / "cr.dcm", ComputedRadiographyImageStorage)


# --- 1. Unknown in-plane spacing on a file without 3D geometry -----------------------------------


def test_cr_with_zero_pixel_spacing_is_read_with_spacing_assumed_and_one_note(tmp_path):
    path = _cr(tmp_path, PixelSpacing="0.000\\0.000")
    assert b"0.000\\0.000" in path.read_bytes()  # the bytes real equipment writes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the assumption is a note in the Image, not a warning
        image = read_image(path)
    ds = pydicom.dcmread(path)
    assert image.shape == (6, 5) and image.modality == "CR"
    np.testing.assert_array_equal(image.array, _rescaled(ds).astype(np.float32))
    assert image.spacing == (1.0, 1.0)
    assert image.metadata["spacing_source"] == "assumed" and image.assumed_spacing_axes == (0, 1)
    assert "pixel_spacing_tag" not in image.metadata
    assert image.metadata["notes"] == [UNKNOWN_CR_NOTE]  # recorded once, nothing else noted
    _assert_no_phi(image)


def test_assumed_spacing_is_refused_by_resampling_like_any_assumed_axis(tmp_path):
    from serving.preprocess_spec import PreprocessSpec
    from serving.preprocessing import preprocess

    image = read_image(_cr(tmp_path, PixelSpacing="0.000\\0.000"))
    with pytest.raises(DataError, match=r"axes \[0, 1\] is unknown \(the reader assumed 1\.0\)"):
        preprocess(image, PreprocessSpec(target_spacing=(0.2, 0.2), size=(None, None)))


@pytest.mark.parametrize("value", [["-0.5", "0.5"], ["nan", "nan"], ["inf", "1"], ["0", "0.1"]])
def test_negative_or_non_finite_pixel_spacing_on_a_radiograph_is_read_as_unknown(tmp_path, value):
    image = read_dicom_file(_cr(tmp_path, PixelSpacing=value))
    assert image.spacing == (1.0, 1.0) and image.assumed_spacing_axes == (0, 1)
    assert image.metadata["notes"] == [
        f"PixelSpacing {value} is not a usable spacing (zero, negative or not finite): spacing "
        f"assumed to be 1.0 per pixel"
    ]


def test_both_spacing_tags_unknown_give_one_note_naming_both(tmp_path):
    image = read_image(_cr(tmp_path, PixelSpacing="0\\0", ImagerPixelSpacing="-1\\-1"))
    assert image.spacing == (1.0, 1.0) and image.metadata["spacing_source"] == "assumed"
    assert image.metadata["notes"] == [
        "PixelSpacing ['0', '0'] is not a usable spacing (zero, negative or not finite); "
        "ImagerPixelSpacing ['-1', '-1'] is not a usable spacing (zero, negative or not finite): "
        "spacing assumed to be 1.0 per pixel"
    ]


def test_unknown_pixel_spacing_falls_back_to_a_known_imager_pixel_spacing(tmp_path):
    raw = np.arange(12).reshape(3, 4)
    ds = _image_dataset("DX", raw, signed=False, PixelSpacing="0.000\\0.000",
                        ImagerPixelSpacing=["0.15", "0.2"])
    image = read_image(_save(ds, tmp_path / "dx.dcm", DigitalXRayImageStorageForPresentation))
    assert image.spacing == (0.15, 0.2) and image.assumed_spacing_axes == ()
    assert image.metadata["pixel_spacing_tag"] == "ImagerPixelSpacing"
    assert image.metadata["notes"] == [
        "spacing from ImagerPixelSpacing: at the detector, not corrected for geometric "
        "magnification; PixelSpacing ['0.000', '0.000'] is not a usable spacing (zero, negative or "
        "not finite): ignored"
    ]


def test_unknown_imager_pixel_spacing_beside_a_known_pixel_spacing_is_noted(tmp_path):
    image = read_image(_cr(tmp_path, PixelSpacing=["0.1", "0.1"], ImagerPixelSpacing="0\\0"))
    assert image.spacing == (0.1, 0.1) and image.metadata["pixel_spacing_tag"] == "PixelSpacing"
    assert image.metadata["notes"] == [
        "spacing from PixelSpacing; ImagerPixelSpacing ['0', '0'] is not a usable spacing (zero, "
        "negative or not finite): ignored"
    ]


def _ct_slice_file(tmp_path, pixel_spacing):
    image = Image(np.arange(36, dtype=np.float32).reshape(1, 6, 6) - 1000, spacing=(2.0, 0.7, 0.7))
    folder = write_dicom_series(image, tmp_path / "ct")
    path = folder / "IM0001.dcm"
    ds = _with_odd_values(pydicom.dcmread(path), PixelSpacing=pixel_spacing)
    ds.save_as(path)
    return folder, path


def test_single_ct_slice_with_zero_pixel_spacing_is_a_2d_image_without_geometry(tmp_path):
    # Its position and orientation are not used: a 1.0 mm guess would misplace every pixel.
    folder, path = _ct_slice_file(tmp_path, "0.000\\0.000")
    ds = pydicom.dcmread(path)
    for image in (read_image(path), read_dicom_series(folder)):  # one file, or a folder of one
        assert image.shape == (6, 6) and image.ndim == 2
        np.testing.assert_array_equal(image.array, _rescaled(ds).astype(np.float32))
        assert image.spacing == (1.0, 1.0) and image.assumed_spacing_axes == (0, 1)
        assert image.origin == (0.0, 0.0)
        assert image.metadata["notes"] == [
            UNKNOWN_CR_NOTE,
            "no usable PixelSpacing: read as a 2D image without patient geometry",
        ]


@pytest.mark.parametrize("value, edit, received", [
    (["0.15"], None, "['0.15']"),  # one value
    ("0.19\\0.15", (b"0.19", b"0.1x"), "['0.1x', '0.15']"),  # not a number: pydicom won't write it
])
def test_damaged_spacing_on_a_radiograph_is_still_refused(tmp_path, value, edit, received):
    # A wrong count or text that is not a number is damage, not "unknown".
    path = _cr(tmp_path, ImagerPixelSpacing=value)
    if edit:
        data = path.read_bytes()
        assert data.count(edit[0]) == 1
        path.write_bytes(data.replace(*edit))
    rule = "`ImagerPixelSpacing` in `{}` must be 2 positive finite numbers. Received: {}"
    with pytest.raises(DataError, match=re.escape(rule.format(path, received))):
        read_image(path)


@pytest.mark.parametrize("value", ["0.000\\0.000", "-0.7\\0.7", "nan\\nan"])
def test_unknown_pixel_spacing_in_a_series_of_several_slices_is_still_refused(tmp_path, value):
    # A series is 3D geometry that preprocessing resamples in mm: a guessed in-plane spacing
    # there would silently scale every later measurement, so it stays an error.
    image = Image(np.zeros((3, 6, 6), np.float32), spacing=(2.0, 0.7, 0.7))
    folder = write_dicom_series(image, tmp_path / "ct")
    for path in sorted(folder.iterdir()):
        _with_odd_values(ds := pydicom.dcmread(path), PixelSpacing=value)
        ds.save_as(path)
    with pytest.raises(DataError, match=r"`PixelSpacing` in `.*IM0001\.dcm` must be 2 positive "
                       r"finite numbers\. Received: \['"):
        read_dicom_series(folder)


# --- 2. Enhanced MR with its functional groups stripped ------------------------------------------


def _emr(tmp_path, *, strip=("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")):
    row, col, normal = _rotation().T
    stored = np.random.default_rng(5).integers(0, 4096, (4, 6, 7))
    path = _enhanced_mr(tmp_path / "emr.dcm", stored, [k * 2.5 * normal for k in (2, 0, 3, 1)],
                        [*row, *col], [0.5, 2.0, 1.25, 3.0], [-10.0, 0.0, 5.0, -1.0])
    ds = pydicom.dcmread(path)
    for keyword in strip:
        delattr(ds, keyword)
    ds.save_as(path)
    return path


def test_enhanced_mr_without_functional_groups_is_a_frame_stack_with_assumed_geometry(tmp_path):
    path = _emr(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    ds = pydicom.dcmread(path)
    assert "PerFrameFunctionalGroupsSequence" not in ds and int(ds.NumberOfFrames) == 4
    assert image.shape == (4, 6, 7) and image.modality == "MR"
    # No rescale survives the stripping: the values are pydicom's stored values, in file order.
    np.testing.assert_array_equal(image.array, ds.pixel_array.astype(np.float32))
    assert image.spacing == (1.0, 1.0, 1.0) and image.assumed_spacing_axes == (0, 1, 2)
    assert image.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(image.direction, axial_direction(3))
    spacing_note = "no PixelSpacing or ImagerPixelSpacing: spacing set to 1.0 per pixel"
    frames_note = STRIPPED_EMR_NOTE.format(spacing="the top-level tags", rescale="the top-level tags")
    assert image.metadata["notes"] == [spacing_note, frames_note]
    assert image.metadata["NumberOfSlices"] == 4
    _assert_no_phi(image)


def test_enhanced_mr_with_only_the_shared_group_left_uses_its_spacing_and_rescale(tmp_path):
    path = _emr(tmp_path, strip=("PerFrameFunctionalGroupsSequence",))
    ds = pydicom.dcmread(path)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "2", "-3", "US"
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = Sequence([transform])
    ds.save_as(path)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, (ds.pixel_array * 2.0 - 3.0).astype(np.float32))
    assert image.spacing == (1.0, 0.6, 0.7) and image.assumed_spacing_axes == (0,)
    assert image.metadata["pixel_spacing_tag"] == "PixelSpacing"
    assert image.metadata["notes"] == [STRIPPED_EMR_NOTE.format(
        spacing="the shared PixelMeasuresSequence",
        rescale="the shared PixelValueTransformationSequence")]


def test_an_empty_per_frame_sequence_is_read_as_stripped(tmp_path):
    path = _emr(tmp_path, strip=("SharedFunctionalGroupsSequence",))
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence = Sequence([])
    ds.save_as(path)
    image = read_dicom_file(path)
    assert image.shape == (4, 6, 7) and image.assumed_spacing_axes == (0, 1, 2)
    np.testing.assert_array_equal(image.array, ds.pixel_array.astype(np.float32))


def test_partly_stripped_functional_groups_are_still_refused(tmp_path):
    # Per-frame groups that exist but do not cover every frame are inconsistent, not absent.
    path = _emr(tmp_path, strip=())
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[3]
    ds.save_as(path)
    with pytest.raises(DataError, match=r"`PerFrameFunctionalGroupsSequence` in `.*emr\.dcm` must "
                       r"hold one item per frame \(NumberOfFrames 4\)\. Received: 3 items"):
        read_image(path)


def test_enhanced_frames_with_positions_at_uneven_gaps_are_still_refused(tmp_path):
    row, col, normal = _rotation().T
    path = _enhanced_mr(tmp_path / "emr.dcm", np.zeros((3, 4, 4), int),
                        [np.zeros(3), normal * 2.0, normal * 7.0], [*row, *col], [1] * 3, [0] * 3)
    with pytest.raises(DataError, match=r"Slice gaps of a series must be uniform"):
        read_image(path)


def test_unknown_per_frame_pixel_spacing_of_an_enhanced_object_is_still_refused(tmp_path):
    # Its frames are placed in 3D: the spacing is geometry, as in a series.
    path = _emr(tmp_path, strip=())
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = "0.000\\0.000"
    ds.save_as(path)
    with pytest.raises(DataError, match=r"`PixelSpacing` in `frame 1 of .*emr\.dcm` must be 2 "
                       r"positive finite numbers\. Received: \['0\.000', '0\.000'\]"):
        read_image(path)


def test_stripped_multiframe_with_fewer_frames_of_pixels_is_refused(tmp_path):
    path = _emr(tmp_path)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 5  # the pixel data holds 4: pydicom cannot decode the 5th
    ds.save_as(path)
    with pytest.raises(DataError, match=r"`.*emr\.dcm` is truncated or undecodable"):
        read_image(path)
