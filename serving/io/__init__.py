"""Readers and writers for medical image formats, all returning or taking an `Image`.

pydicom and nibabel are imported only when a DICOM or NIfTI file is actually read or written.
"""

from serving.io.dicom import read_dicom_series, write_dicom_series
from serving.io.nifti import read_nifti, write_nifti
from serving.io.registry import READERS, read_image, read_npy

__all__ = [
    "READERS",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "read_npy",
    "write_dicom_series",
    "write_nifti",
]
