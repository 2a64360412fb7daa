"""DICOM in and out: the readers (re-exported here) and the CT series writer.

- `read_dicom_series` (`serving.io.dicom_series`): one series from a folder or study folder.
- `read_dicom_file` (`serving.io.dicom_file`): one file: a slice, a radiograph, an enhanced
  multi-frame object.
- `write_dicom_series`: a 3D image of Hounsfield units as a CT Image Storage series.

Shared reading rules live in `serving.io.base_dicom` (values, MONOCHROME1, decoding) and
`serving.io.dicom_stack` (geometry: sorting, gaps, resampling).
pydicom is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from serving.atomic import atomic_dir
from serving.errors import DataError
from serving.image import Image
from serving.io.base_dicom import METADATA_TAGS, pydicom_module
from serving.io.dicom_file import read_dicom_file
from serving.io.dicom_series import read_dicom_series

__all__ = [
    "METADATA_TAGS",
    "read_dicom_file",
    "read_dicom_series",
    "write_dicom_series",
]

# Stored value = round(HU - intercept); -1024 puts air near 0 and keeps [-33792, 31743] HU.
_INTERCEPT = -1024.0
_INT16 = np.iinfo(np.int16)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) as precise as the VR allows."""
    from pydicom.valuerep import format_number_as_ds

    value = float(value)
    return format_number_as_ds(0.0 if abs(value) < 1e-9 else value)


def write_dicom_series(
    image: Image,
    folder: str | os.PathLike,
    *,
    series_description: str = "kerasmed",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "ANON",
    uid_entropy: str | None = None,
    window: tuple[float, float] = (-600.0, 1500.0),
    overwrite: bool = False,
) -> Path:
    """Write a 3D image of Hounsfield units as a CT Image Storage series, one file per slice.

    Pixels are stored as int16 with RescaleSlope 1 and RescaleIntercept -1024, so values are
    rounded to whole HU and clipped to [-33792, 31743]. The series is written into a temporary
    sibling folder and renamed into place, so a partial series never looks complete. Patient
    name and birth date are empty placeholders; nothing identifying is written.

    Args:
        image: 3D `Image` of shape `(z, rows, cols)` with an orthonormal direction (no gantry
            tilt). Axis 0 normally points along row cosines x column cosines (as for every image
            read from DICOM and the axial default); if it points the other way the series is
            still correct, but reading it back returns the slices in reverse order.
        folder: the series folder to create; files are named `IM0001.dcm`, `IM0002.dcm`...
        series_description: SeriesDescription.
        study_uid: StudyInstanceUID; generated when None.
        series_uid: SeriesInstanceUID; generated when None.
        patient_id: PatientID (and PatientName); an anonymous placeholder.
        uid_entropy: when given, every generated UID is derived from it, so the same call
            writes identical files; when None UIDs are random.
        window: (WindowCenter, WindowWidth) display default, lung window by default.
        overwrite: replace `folder` if it exists.

    Returns:
        The series folder.

    Raises:
        DataError: if the image is not 3D, its axes are not orthonormal, or `folder` exists and
            `overwrite` is False.
    """
    pydicom_module()  # a clear install hint before the submodule imports below
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    if image.ndim != 3:
        raise DataError(
            f"`image` must be 3D (z, rows, cols) to be written as a DICOM series. "
            f"Received: shape={image.shape}"
        )
    direction = np.asarray(image.direction, float)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError(
            "`image.direction` must be orthonormal (no shear or gantry tilt) to be written as "
            f"DICOM. Received: direction={direction.tolist()}"
        )
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise DataError(
            "`folder` already exists; pass overwrite=True to replace it. "
            f"Received: folder={str(folder)!r}"
        )

    def uid(tag: str) -> str:
        return (
            generate_uid(entropy_srcs=[uid_entropy, tag])
            if uid_entropy is not None
            else generate_uid()
        )

    study_uid = study_uid or uid("study")
    series_uid = series_uid or uid("series")
    frame_uid = uid("frame-of-reference")
    stored = np.clip(
        np.rint(np.asarray(image.array, np.float64) - _INTERCEPT), _INT16.min, _INT16.max
    )
    stored = stored.astype("<i2")
    slice_gap, row_spacing, col_spacing = image.spacing
    normal = np.cross(direction[:, 2], direction[:, 1])

    # Type 2 patient/study tags are present but empty: the series identifies no one.
    series_tags = {
        "SOPClassUID": CTImageStorage,
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "FrameOfReferenceUID": frame_uid,
        "PositionReferenceIndicator": "",
        "PatientName": patient_id,
        "PatientID": patient_id,
        **dict.fromkeys(
            ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"), ""
        ),
        **dict.fromkeys(("AccessionNumber", "ReferringPhysicianName", "KVP"), ""),
        "Modality": "CT",
        "Manufacturer": "kerasmed",
        "SeriesDescription": series_description,
        "SeriesNumber": 1,
        "ImageType": ["DERIVED", "SECONDARY", "AXIAL"],
        "PatientPosition": "HFS",
        "ImageOrientationPatient": [_ds(v) for v in (*direction[:, 2], *direction[:, 1])],
        "PixelSpacing": [_ds(row_spacing), _ds(col_spacing)],
        "SliceThickness": _ds(slice_gap),
        "SpacingBetweenSlices": _ds(slice_gap),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": image.shape[1],
        "Columns": image.shape[2],
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "RescaleIntercept": _ds(_INTERCEPT),
        "RescaleSlope": "1",
        "RescaleType": "HU",
        "WindowCenter": _ds(window[0]),
        "WindowWidth": _ds(window[1]),
    }
    with atomic_dir(folder) as tmp:
        for k in range(image.shape[0]):
            position = np.asarray(image.origin) + direction[:, 0] * slice_gap * k
            sop_uid = uid(f"sop-{k}")
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            for keyword, value in series_tags.items():
                setattr(ds, keyword, value)
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(position @ normal)
            ds.PixelData = stored[k].tobytes()
            ds.save_as(tmp / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
    return folder

