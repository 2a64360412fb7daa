"""Builders shared by the DICOM reader tests: shipped pydicom files, and standards-conformant
files made with pydicom (expected values are computed from pydicom, never from the reader)."""


import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
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


# --- Shipped files: a CT slice, MR and its compressed twins -------------------------------------
