"""Readers and writers for medical image formats, all returning or taking an `Image`.

Writers: NIfTI, a CT DICOM series, a DICOM SEG of a mask over its source series
(`write_dicom_seg`), PNG overlays (`write_overlay`) and findings as CSV/JSON (`mask_findings`,
`write_findings`).

pydicom, nibabel, Pillow, tifffile, highdicom and scipy are imported only when a file that needs
them is actually read or written.
"""

from serving.io.dicom import read_dicom_file, read_dicom_series, write_dicom_series
from serving.io.dicom_seg import write_dicom_seg
from serving.io.findings import mask_findings, write_findings
from serving.io.nifti import read_nifti, write_nifti
from serving.io.npy import read_npy, read_npz
from serving.io.overlay import write_overlay
from serving.io.raster import read_raster
from serving.io.registry import READERS, read_image

__all__ = [
    "READERS",
    "mask_findings",
    "read_dicom_file",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "read_npy",
    "read_npz",
    "read_raster",
    "write_dicom_seg",
    "write_dicom_series",
    "write_findings",
    "write_nifti",
    "write_overlay",
]
