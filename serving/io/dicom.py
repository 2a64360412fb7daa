"""Read and write DICOM CT series as `Image`s.

A series is a folder of single-frame files sharing one SeriesInstanceUID. Slices are ordered by the
projection of ImagePositionPatient onto the slice normal, never by file name or InstanceNumber,
which scanners and anonymisers do not keep reliable.

Geometry (see `serving.image`): the array is `(z, rows, cols)`; `direction` columns are the slice
normal, the column cosines (ImageOrientationPatient[3:6], the way row index grows) and the row
cosines (ImageOrientationPatient[0:3], the way column index grows); `origin` is the
ImagePositionPatient of the first slice.

pydicom is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.atomic import atomic_dir
from serving.errors import DataError
from serving.image import PHI_KEYS, Image
from serving.lazy_import import lazy_import

# Only these tags reach `Image.metadata`: technical facts that cannot identify a patient.
METADATA_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SliceThickness",
    "KVP",
    "ConvolutionKernel",
    "BodyPartExamined",
    "SeriesDescription",
    "ImageType",
    "PatientPosition",
)
# Stored value = round(HU - intercept); -1024 puts air near 0 and keeps [-33792, 31743] HU.
_INTERCEPT = -1024.0
_INT16 = np.iinfo(np.int16)
# Relative spread of slice gaps above which a series is refused rather than silently resampled.
_GAP_TOLERANCE = 0.01
# How far from 1 the length of an ImageOrientationPatient direction may be (decimal strings
# written with few digits); beyond it the orientation is garbled, not rounded.
_UNIT_TOLERANCE = 1e-3


def _pydicom():
    return lazy_import("pydicom", purpose="read and write DICOM series")


def _read_file(path: Path):
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            # Real-world files carry many harmless VR/value warnings; geometry is checked below.
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for bad input; all mean "not readable"
        raise DataError(
            f"Every file in a DICOM series folder must be a DICOM Part 10 file (128-byte preamble "
            f"and 'DICM' marker). Could not read `{path}`. Received: {type(err).__name__}: {err}"
        ) from err
    if "PixelData" not in ds:
        # pydicom stops quietly at the end of a truncated file, so a file cut anywhere before its
        # pixels reads as a short dataset; it would otherwise be reported as lacking a UID.
        raise DataError(
            f"Every file in a DICOM series folder must be a readable DICOM image file; `{path}` "
            f"holds no pixel data: it is truncated or corrupt (or not an image). Received: a "
            f"{path.stat().st_size}-byte file with {len(ds)} data elements and no PixelData"
        )
    return ds


def _value(ds, keyword: str, path: Path) -> Any:
    """`ds.get(keyword)`. pydicom converts a value on first access, long after `dcmread`
    succeeded, so a damaged one raises (or warns) here; both mean the file is corrupt."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            return ds.get(keyword)
    except Exception as err:  # e.g. NotImplementedError for a VR garbled into an unknown one
        raise DataError(
            f"`{keyword}` in `{path}` must be a readable DICOM value. "
            f"Received: {type(err).__name__}: {' '.join(str(err).split())}"
        ) from err


def _numbers(
    ds, keyword: str, path: Path, count: int | None = None, positive: bool = False
) -> tuple[float, ...] | None:
    """The values of a numeric tag as floats, or None when it is absent or empty.

    Raises:
        DataError: unless the tag holds exactly `count` (when None, one or more) finite numbers,
            all > 0 when `positive`.
    """
    value = _value(ds, keyword, path)
    if value is None or value == "":
        return None
    multi = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    raw = list(value) if multi else [value]
    try:
        numbers = tuple(float(v) for v in raw)
    except (TypeError, ValueError, OverflowError):  # pydicom leaves an unparsable DS as a str
        numbers = ()
    if (
        not numbers
        or len(numbers) != (count or len(numbers))
        or not all(math.isfinite(n) and (n > 0 or not positive) for n in numbers)
    ):
        rule = f"{count or 'one or more'} {'positive ' if positive else ''}finite number"
        raise DataError(
            f"`{keyword}` in `{path}` must be {rule}{'' if count == 1 else 's'}. "
            f"Received: {[str(v)[:20] for v in raw[:8]]}{'...' if len(raw) > 8 else ''}"
        )
    return numbers


def _require(ds, path: Path, *tags: str) -> None:
    missing = [tag for tag in tags if tag not in ds or _value(ds, tag, path) in (None, "")]
    if missing:
        raise DataError(
            f"A DICOM slice must carry {', '.join(tags)} to be placed in 3D; `{path}` lacks "
            f"{missing}. Received: a file without {missing[0]}"
        )


def _pixels(ds, path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            pixels = ds.pixel_array
    except Exception as err:  # truncated, missing or undecodable pixel data
        raise DataError(
            f"A DICOM slice must hold complete Rows x Columns pixel data; `{path}` is truncated "
            f"or undecodable. Received: {type(err).__name__}: {err}"
        ) from err
    if pixels.ndim != 2:
        raise DataError(
            f"Only single-frame greyscale DICOM slices are supported; `{path}` has pixel data of "
            f"shape {pixels.shape}. Received: shape={pixels.shape}"
        )
    (slope,) = _numbers(ds, "RescaleSlope", path, 1) or (1.0,)
    (intercept,) = _numbers(ds, "RescaleIntercept", path, 1) or (0.0,)
    slope = slope or 1.0  # a zero slope has always been read as "not given"
    with np.errstate(all="ignore"):  # overflow is refused just below, not warned about
        hu = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(hu).all():
        raise DataError(
            f"RescaleSlope and RescaleIntercept in `{path}` must map the stored pixels to finite "
            f"float32 values. Received: RescaleSlope={slope}, RescaleIntercept={intercept}"
        )
    return hu


def _plain(value: Any) -> Any:
    """pydicom values (DSfloat, IS, MultiValue...) as JSON-friendly Python values."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _metadata(ds, path: Path, num_slices: int) -> dict[str, Any]:
    values = {tag: _value(ds, tag, path) for tag in METADATA_TAGS}
    meta = {tag: _plain(value) for tag, value in values.items() if value not in (None, "")}
    meta["NumberOfSlices"] = num_slices
    # Belt and braces: the whitelist never names a PHI tag, and Image refuses them anyway.
    return {k: v for k, v in meta.items() if k not in PHI_KEYS}


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read one DICOM series from a folder into an `Image` of Hounsfield units.

    Args:
        folder: a folder holding the series' files (and nothing else but other DICOM series).
        series_uid: the SeriesInstanceUID to read when the folder holds several series.

    Returns:
        An `Image` with a float32 array of shape `(z, rows, cols)` (RescaleSlope/Intercept
        applied), spacing `(slice gap, row spacing, column spacing)` in mm, the LPS origin of the
        first slice, direction columns (normal, column cosines, row cosines), the modality and
        whitelisted non-identifying metadata (`METADATA_TAGS` plus `NumberOfSlices`).

    Raises:
        DataError: if the folder is missing or empty, a file is not a complete DICOM slice, it
            holds several series and `series_uid` is not given (or not found), a geometry or
            rescale tag is damaged (not the standard count of finite numbers, orientation rows
            not unit vectors or parallel), slices disagree on size or orientation, share a
            position, or are unevenly spaced (> 1%).

    Example:
        >>> ct = read_dicom_series("patient01/ct")
        >>> ct.array.shape, ct.spacing            # ((120, 512, 512), (2.5, 0.7, 0.7))
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"`folder` must be an existing folder of DICOM files. Received: folder={str(folder)!r}"
        )
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise DataError(
            f"`folder` contains no DICOM files; expected one file per slice. "
            f"Received: folder={str(folder)!r} (empty)"
        )
    by_series: dict[str, list] = {}
    for path in paths:
        ds = _read_file(path)
        _require(ds, path, "SeriesInstanceUID")
        by_series.setdefault(str(_value(ds, "SeriesInstanceUID", path)), []).append((path, ds))
    if series_uid is None and len(by_series) > 1:
        raise DataError(
            f"`folder` {str(folder)!r} holds {len(by_series)} series; pass `series_uid` to choose "
            f"one of {sorted(by_series)}. Received: series_uid=None"
        )
    if series_uid is not None and series_uid not in by_series:
        raise DataError(
            f"`series_uid` must be one of the series in {str(folder)!r}: {sorted(by_series)}. "
            f"Received: series_uid={series_uid!r}"
        )
    slices = by_series[series_uid] if series_uid is not None else next(iter(by_series.values()))
    return _assemble(slices, folder)


def _assemble(slices: list, folder: Path) -> Image:
    geometry_tags = (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "Rows",
        "Columns",
    )
    for path, ds in slices:
        _require(ds, path, *geometry_tags)
    first_path, first = slices[0]

    def size(ds, path) -> tuple[int, int]:
        return tuple(int(_numbers(ds, t, path, 1, positive=True)[0]) for t in ("Rows", "Columns"))

    orientation = np.array(_numbers(first, "ImageOrientationPatient", first_path, 6))
    first_size = size(first, first_path)
    pixel_spacing = _numbers(first, "PixelSpacing", first_path, 2, positive=True)
    for path, ds in slices[1:]:
        other_size, other = size(ds, path), _numbers(ds, "ImageOrientationPatient", path, 6)
        if other_size != first_size or not np.allclose(other, orientation, atol=1e-4):
            raise DataError(
                f"All slices of a series must share Rows, Columns and ImageOrientationPatient; "
                f"`{path}` differs from `{first_path}`. "
                f"Received: {other_size[0]}x{other_size[1]}, {list(other)}"
            )
    row_cosines, col_cosines = orientation[:3], orientation[3:6]
    with np.errstate(all="ignore"):  # huge values overflow; they are refused just below
        lengths = np.linalg.norm([row_cosines, col_cosines], axis=1)
        normal = np.cross(row_cosines, col_cosines)
        norm = np.linalg.norm(normal)
    if not np.allclose(lengths, 1.0, atol=_UNIT_TOLERANCE) or norm < 1e-6:
        raise DataError(
            f"ImageOrientationPatient must hold two non-parallel unit vectors in `{first_path}`. "
            f"Received: {orientation.tolist()}"
        )
    normal = normal / norm
    positions = np.array([_numbers(ds, "ImagePositionPatient", path, 3) for path, ds in slices])
    with np.errstate(all="ignore"):  # a non-finite projection is refused in `_slice_gap`
        along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    slices = [slices[i] for i in order]
    slice_gap = _slice_gap(along, slices, folder)

    array = np.stack([_pixels(ds, path) for path, ds in slices])
    direction = np.stack([normal, col_cosines, row_cosines], axis=1)
    path, ds = slices[0]
    return Image(
        array=array,
        spacing=(slice_gap, pixel_spacing[0], pixel_spacing[1]),
        origin=tuple(positions[0]),
        direction=direction,
        modality=str(_value(ds, "Modality", path) or "OT"),
        metadata=_metadata(ds, path, len(slices)),
    )


def _slice_gap(along: np.ndarray, slices: list, folder: Path) -> float:
    if len(along) == 1:
        path, ds = slices[0]
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            (value,) = _numbers(ds, keyword, path, 1) or (0.0,)
            if value < 0:
                raise DataError(
                    f"`{keyword}` in `{path}` must be a positive number (or 0 or empty when not "
                    f"known). Received: {value}"
                )
            if value > 0:  # 0 or empty: not recorded, try the next tag
                return value
        return 1.0
    with np.errstate(all="ignore"):
        gaps = np.diff(along)
    if not np.isfinite(gaps).all():
        raise DataError(
            f"ImagePositionPatient of every slice in {str(folder)!r} must give a finite position "
            f"along the slice normal. Received: positions from {along.min()} to {along.max()} mm"
        )
    if np.any(gaps < 1e-4):
        i = int(np.argmin(gaps))
        raise DataError(
            f"Slices of a series must have distinct positions along the slice normal; "
            f"`{slices[i][0]}` and `{slices[i + 1][0]}` coincide. "
            f"Received: position {along[i]:.4f} mm twice"
        )
    gap = float(np.median(gaps))
    worst = float(np.max(np.abs(gaps - gap)))
    if worst > _GAP_TOLERANCE * gap:
        raise DataError(
            f"Slice gaps of a series must be uniform within {_GAP_TOLERANCE:.0%} (missing slice?) "
            f"in {str(folder)!r}; median gap {gap:.4f} mm. Received: gaps from {gaps.min():.4f} "
            f"to {gaps.max():.4f} mm"
        )
    return gap


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
    _pydicom()  # a clear install hint before the submodule imports below
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

