"""Readers and writers for medical image formats, all returning or taking an `Image`.

pydicom, nibabel and Pillow are imported only when a DICOM, NIfTI or PNG/JPEG/TIFF file is actually
read or written.
"""

from serving.io.dicom import read_dicom_file, read_dicom_series, write_dicom_series
from serving.io.nifti import read_nifti, write_nifti
from serving.io.npy import read_npy, read_npz
from serving.io.raster import read_raster
from serving.io.registry import READERS, read_image

__all__ = [
    "READERS",
    "read_dicom_file",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "read_npy",
    "read_npz",
    "read_raster",
    "write_dicom_series",
    "write_nifti",
]
