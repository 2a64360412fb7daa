"""Builders shared by the DICOM reader tests: shipped pydicom files, and standards-conformant
files made with pydicom (expected values are computed from pydicom, never from the reader)."""


import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from serving.image import PHI_KEYS

PHI_VALUES = ("Doe^Jane", "Doe", "PAT-4711", "19700101")


def _shipped(name):
    # The files ship inside the pydicom wheel: found in place, never downloaded.
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's wheel must ship its test file {name}"
    return path


def _rescaled(ds):
    """pydicom's stored pixels with the rescale applied by hand (float64)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    return ds.pixel_array.astype(np.float64) * slope + float(ds.get("RescaleIntercept", 0))


def _decoder_available(syntax):
    from pydicom.pixels.decoders.base import get_decoder

    return get_decoder(syntax).is_available


def _save(ds, path, sop_class):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _image_dataset(modality, stored, *, bits_stored=16, signed=True, photometric="MONOCHROME2",
                   series_uid=None, **tags):
    """A greyscale image dataset (Image Pixel module and fake PHI) holding `stored`."""
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = tags.pop("study_uid", "1.2.826.0.1.3680043.8.498.1")
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PAT-4711", "19700101"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored).astype("<i2" if signed else "<u2").tobytes()
    return ds


def _assert_no_phi(image):
    assert not PHI_KEYS & set(image.metadata)
    assert not any(value in repr(image.metadata) for value in PHI_VALUES)


def _frame(normal, row, col):
    """Direction matrix in the reader's convention: columns normal, column and row cosines."""
    return np.stack([normal, col, row], axis=1)


def _rotation():
    a, b = np.deg2rad(25.0), np.deg2rad(-40.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx  # columns: row cosines, column cosines, normal (= row x column)


def _item(**tags):
    item = Dataset()
    for keyword, value in tags.items():
        setattr(item, keyword, value)
    return item


def _enhanced_mr(path, stored, positions, orientation, slopes, intercepts, *, per_frame_orientation=False):
    """An Enhanced MR Image object: shared PixelMeasures (and orientation), per-frame position and
    PixelValueTransformation."""
    ds = _image_dataset("MR", stored, bits_stored=12, signed=False, ImageType=["ORIGINAL", "PRIMARY",
                        "M", "NONE"], NumberOfFrames=len(stored), InstanceNumber=1,
                        ContentDate="20240101", ContentTime="120000", AcquisitionContrast="T1",
                        PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                        VolumeBasedCalculationTechnique="NONE", BurnedInAnnotation="NO")
    iop = [f"{v:.10f}" for v in orientation]
    shared = _item(PixelMeasuresSequence=Sequence([_item(PixelSpacing=["0.6", "0.7"],
                                                         SliceThickness="2.0")]))
    if not per_frame_orientation:
        shared.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=iop)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k, (position, slope, intercept) in enumerate(zip(positions, slopes, intercepts)):
        item = _item(
            FrameContentSequence=Sequence([_item(DimensionIndexValues=[1, k + 1])]),
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[f"{v:.10f}" for v in position])]),
            PixelValueTransformationSequence=Sequence([_item(
                RescaleSlope=str(slope), RescaleIntercept=str(intercept), RescaleType="US")]),
        )
        if per_frame_orientation:
            item.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=iop)])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return _save(ds, path, EnhancedMRImageStorage)


# --- Shipped files: a CT slice, MR and its compressed twins -------------------------------------
