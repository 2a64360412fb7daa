"""DICOM SEG writer: every frame lands on the right source slice.

Expected frames are computed here from the source files alone (pydicom's pixels with the rescale
applied by hand, looked up by the SOP instance the frame references), never from the writer's
slice mapping.
"""

import logging
import shutil
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from serving.errors import ConfigError, DataError, DependencyError
from serving.image import Image
from serving.io import read_image, write_dicom_seg, write_dicom_series

SHAPE = (6, 20, 24)
# Axis 0 against the slice normal: the reader returns the written slices in reverse order.
REVERSED = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
FAKE_PATIENT = "DOE^JANE-4711"


def _labels_from_hu(hu):
    """The known lesions by intensity: label 1 for 0 < HU <= 500, label 2 above 500 HU."""
    hu = np.asarray(hu, np.float64)
    return (hu > 0).astype(np.uint8) + (hu > 500)


def _ct_with_lesions(direction=None):
    """-800 HU lung with a 100 HU cube (label 1) on slices 1-2 and an 800 HU block (label 2)
    on slice 4: asymmetric along z, so a slice mapped to the wrong source shows."""
    hu = np.full(SHAPE, -800.0, np.float32)
    hu[1:3, 3:8, 4:10] = 100.0
    hu[4, 10:14, 12:18] = 800.0
    return Image(hu, (2.5, 0.7, 0.8), (-100.25, 20.5, -233.3), direction, modality="CT")


def _series(tmp_path, direction=None, shuffle_seed=None, **kwargs):
    folder = write_dicom_series(_ct_with_lesions(direction), tmp_path / "ct", patient_id=FAKE_PATIENT,
                                **kwargs)
    if shuffle_seed is not None:  # file names no longer follow position
        files = sorted(folder.iterdir())
        order = np.random.default_rng(shuffle_seed).permutation(len(files))
        for name, path in zip(order, files):
            path.rename(folder / f"S{name:02d}.dcm")
    return folder


def _hu(ds):
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _check_seg(seg_path, source_paths, segment_numbers):
    """Each frame: its source instance exists, shares its position, and its pixels are that
    instance's lesion of the frame's segment. Each non-empty (instance, segment) has a frame."""
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in source_paths)}
    seg = pydicom.dcmread(seg_path)
    first = next(iter(sources.values()))
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(sources)
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == segment_numbers
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    seen = set()
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = sources[uid]
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in source.ImagePositionPatient],
            atol=1e-4,
        )
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(frame.astype(bool), _labels_from_hu(_hu(source)) == segment)
        seen.add((uid, segment))
    for uid, source in sources.items():
        for segment in segment_numbers:
            if (_labels_from_hu(_hu(source)) == segment).any():
                assert (uid, segment) in seen
    return seg


@pytest.mark.parametrize(
    "direction, shuffle_seed",
    [(None, None), (None, 3), (REVERSED, 5)],
    ids=["axial", "shuffled-files", "reversed-axis-shuffled"],
)
def test_multi_label_frames_land_on_their_source_slices(tmp_path, direction, shuffle_seed):
    folder = _series(tmp_path, direction, shuffle_seed)
    ct = read_image(folder)
    mask = ct.with_array(_labels_from_hu(ct.array), modality="SEG")
    path = write_dicom_seg(mask, folder, tmp_path / "out" / "seg.dcm", class_names=["solid", "calcified"],
                           algorithm_name="unit-test", algorithm_version="9.9")
    seg = _check_seg(path, list(folder.iterdir()), [1, 2])
    assert int(seg.NumberOfFrames) == 3  # two slices of label 1, one of label 2; empty ones omitted
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["solid", "calcified"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("unit-test", "9.9")
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind
    # highdicom's own reading agrees: per source instance, the label map of that slice.
    seg = hd.seg.segread(path)
    for source_path in folder.iterdir():
        source = pydicom.dcmread(source_path)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[source.SOPInstanceUID],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
        )
        np.testing.assert_array_equal(pixels[0], _labels_from_hu(_hu(source)))


def test_list_of_files_in_any_order_is_a_source(tmp_path):
    folder = _series(tmp_path)
    ct = read_image(folder)
    mask = ct.with_array(ct.array > 0)  # bool: the binary case, one segment
    files = sorted(folder.iterdir(), reverse=True)
    path = write_dicom_seg(mask, files, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SegmentSequence[0].SegmentLabel == "class 1"
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    sources = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, files)}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = sources[str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        np.testing.assert_array_equal(frame.astype(bool), _hu(source) > 0)


def test_pydicom_ct_small_as_a_one_slice_series(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    ct = read_image(folder)
    assert ct.shape == (1, 128, 128)
    source = pydicom.dcmread(folder / "CT_small.dcm")
    expected = _hu(source) > 100  # by hand from pydicom's pixels, not from `ct`
    mask = ct.with_array((ct.array > 100).astype(np.uint8))
    path = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", class_names="dense")
    seg = pydicom.dcmread(path)
    assert int(seg.NumberOfFrames) == 1
    item = seg.PerFrameFunctionalGroupsSequence[0]
    assert item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
    assert [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx(
        [float(v) for v in source.ImagePositionPatient], abs=1e-4
    )
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), expected)
    assert 0 < expected.sum() < expected.size


def test_empty_mask_is_a_valid_seg_with_every_frame(tmp_path):
    folder = _series(tmp_path)
    ct = read_image(folder)
    path = write_dicom_seg(ct.with_array(np.zeros(SHAPE, np.uint8)), folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    assert int(seg.NumberOfFrames) == SHAPE[0]
    assert not seg.pixel_array.any()
    positions = sorted(float(i.PlanePositionSequence[0].ImagePositionPatient[2])
                       for i in seg.PerFrameFunctionalGroupsSequence)
    expected = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in folder.iterdir())
    assert positions == pytest.approx(expected)


def test_mask_on_another_grid_is_refused_naming_both_shapes(tmp_path):
    folder = _series(tmp_path)
    ct = read_image(folder)
    short = Image(np.zeros((5, 20, 24), np.uint8), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(DataError, match=r"mask shape=\(5, 20, 24\).*source shape=\(6, 20, 24\)"):
        write_dicom_seg(short, folder, tmp_path / "seg.dcm")
    shifted = ct.with_array(np.zeros(SHAPE, np.uint8), origin=(ct.origin[0] + 2.5, *ct.origin[1:]))
    with pytest.raises(DataError, match=r"grid of its source series.*origin"):
        write_dicom_seg(shifted, folder, tmp_path / "seg.dcm")
    narrow = Image(np.zeros((6, 20, 23), np.uint8), ct.spacing, ct.origin, ct.direction)
    with pytest.raises(DataError, match=r"20x24 pixels.*mask shape=\(6, 20, 23\)"):
        write_dicom_seg(narrow, folder, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_labels_must_be_named_whole_numbers(tmp_path):
    folder = _series(tmp_path)
    ct = read_image(folder)
    with pytest.raises(DataError, match=r"at most the number of `class_names` \(1\).*max label 2"):
        write_dicom_seg(ct.with_array(_labels_from_hu(ct.array)), folder, tmp_path / "s.dcm",
                        class_names=["one"])
    with pytest.raises(DataError, match="whole numbers"):
        write_dicom_seg(ct.with_array(np.full(SHAPE, 0.5, np.float32)), folder, tmp_path / "s.dcm")


def test_several_series_need_a_series_uid(tmp_path):
    folder = _series(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.1")
    write_dicom_series(_ct_with_lesions(), tmp_path / "other", series_uid="1.2.826.0.1.3680043.8.498.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(folder / f"other_{path.name}")
    ct = read_image(folder, series_uid="1.2.826.0.1.3680043.8.498.1")
    mask = ct.with_array(_labels_from_hu(ct.array))
    with pytest.raises(DataError, match="holds 2 series; pass `series_uid`"):
        write_dicom_seg(mask, folder, tmp_path / "seg.dcm")
    path = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", series_uid="1.2.826.0.1.3680043.8.498.1")
    chosen = [p for p in folder.iterdir() if not p.name.startswith("other_")]
    _check_seg(path, chosen, [1, 2])


def test_patient_identifiers_are_copied_into_the_seg_but_never_logged(tmp_path, caplog, capsys):
    folder = _series(tmp_path)
    ct = read_image(folder)
    with caplog.at_level(logging.DEBUG):
        path = write_dicom_seg(ct.with_array(_labels_from_hu(ct.array)), folder, tmp_path / "seg.dcm")
    out, err = capsys.readouterr()
    assert FAKE_PATIENT not in caplog.text + out + err
    assert pydicom.dcmread(path).PatientID == FAKE_PATIENT  # the standard requires the copy


def test_missing_highdicom_is_a_dependency_error(tmp_path, monkeypatch):
    folder = _series(tmp_path)
    ct = read_image(folder)
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(DependencyError, match="pip install highdicom"):
        write_dicom_seg(ct.with_array(ct.array > 0), folder, tmp_path / "seg.dcm")


def test_segment_codes_name_what_each_class_is(tmp_path):
    folder = _series(tmp_path, None, None)
    ct = read_image(folder)
    mask = ct.with_array(_labels_from_hu(ct.array), modality="SEG")
    path = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", class_names=["nodule", "vessel"],
                           segment_types=["Nodule", ("59820001", "SCT", "Blood vessel")],
                           segment_categories=["MorphologicallyAbnormalStructure", "Tissue"])
    seg = pydicom.dcmread(path)
    types = [s.SegmentedPropertyTypeCodeSequence[0] for s in seg.SegmentSequence]
    categories = [s.SegmentedPropertyCategoryCodeSequence[0] for s in seg.SegmentSequence]
    # SNOMED CT 27925004 is "Nodule", 85756007 "Tissue", 49755003 "Morphologically abnormal
    # structure" (the values, from the SNOMED CT release, are not looked up by the test).
    assert [(c.CodeValue, c.CodingSchemeDesignator) for c in types] == [
        ("27925004", "SCT"), ("59820001", "SCT")]
    assert types[1].CodeMeaning == "Blood vessel"
    assert [c.CodeValue for c in categories] == ["49755003", "85756007"]
    # Default: a lesion, as before.
    default = pydicom.dcmread(write_dicom_seg(mask, folder, tmp_path / "d.dcm"))
    assert default.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"


def test_segment_codes_must_be_known_and_one_per_class(tmp_path):
    folder = _series(tmp_path, None, None)
    ct = read_image(folder)
    mask = ct.with_array(_labels_from_hu(ct.array), modality="SEG")
    with pytest.raises(ConfigError, match=r"one entry per class \(2\)\. Received: \['Nodule'\]"):
        write_dicom_seg(mask, folder, tmp_path / "s.dcm", segment_types=["Nodule"])
    with pytest.raises(ConfigError, match=r"SNOMED CT keywords.*close to yours: \['Nodule'.*"
                       r"Received: 'Nodul'"):
        write_dicom_seg(mask, folder, tmp_path / "s.dcm", segment_types=["Nodul", "Lung"])
    assert not (tmp_path / "s.dcm").exists()
