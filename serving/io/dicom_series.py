"""Read one image series from a DICOM folder or study folder as an `Image`.

Every file under the folder (subfolders included, hidden names skipped) must be DICOM. Files are
grouped by SeriesInstanceUID; non-image objects (SR, presentation states, key object selections,
SEG, RT objects, DICOMDIR) are skipped with a note in `metadata["notes"]`. One series is read:
the one named by `series_uid`, the only one, or the one `pick` chooses.

Slices are ordered by the projection of ImagePositionPatient onto the slice normal, never by file
name or InstanceNumber, which scanners and anonymisers do not keep reliable. A series that is a
single file is read as `serving.io.dicom_file.read_dicom_file` reads it (a slice, a radiograph, an
enhanced multi-frame object).

Geometry (see `serving.image`): the array is `(z, rows, cols)`; `direction` columns are the slice
normal, the column cosines (ImageOrientationPatient[3:6], the way row index grows) and the row
cosines (ImageOrientationPatient[0:3], the way column index grows); `origin` is the
ImagePositionPatient of the first slice. Values and MONOCHROME1 follow `serving.io.base_dicom`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from serving.deid import check_allow
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.base_dicom import (
    MONOCHROME1_NOTE,
    _integer,
    _require,
    _value,
    is_multiframe,
    metadata,
    non_image,
    read_dataset,
)
from serving.io.dicom_file import image_from_dataset
from serving.io.dicom_stack import slice_plane, stack_planes

PICK_RULES = ("most_slices",)


def read_dicom_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    *,
    pick: str | None = None,
    resample_uneven: bool = False,
    allow: Sequence[str] | None = None,
) -> Image:
    """Read one DICOM series from a folder (or a study folder) into an `Image`.

    Args:
        folder: a folder holding the series' files, possibly with other series and non-image
            objects, in any subfolders.
        series_uid: the SeriesInstanceUID to read.
        pick: how to choose when `series_uid` is None and the folder holds several image
            series. None (the default) refuses, listing each series with its modality and number
            of slices. "most_slices": the CT series with the most slices, or, when there is no CT
            series, the image series with the most slices; a tie is refused.
        resample_uneven: when the slice gaps are uneven by more than 1% (uneven spacing, or a
            missing slice), interpolate linearly along the normal onto a uniform grid from the
            first to the last slice, with about the median gap, instead of refusing; the note
            names the irregular gaps.
        allow: DICOM keywords to copy into `metadata` beyond the technical allow-list
            (`serving.deid.ALLOWED_ATTRIBUTES`), e.g. `["SeriesDescription"]`. Attributes that the
            PS3.15 Basic Confidentiality Profile removes are out unless named here, and are then
            listed in `metadata["phi_allowed"]`.

    Returns:
        An `Image` with a float32 array of shape `(z, rows, cols)` (rescale applied, MONOCHROME1
        inverted), spacing `(slice gap, row spacing, column spacing)` in mm, the LPS origin of the
        first slice, direction columns (normal, column cosines, row cosines), the modality and
        allow-listed non-identifying metadata (`METADATA_TAGS`, `NumberOfSlices`, and `notes`
        naming files by their path inside `folder` when files were skipped, a series picked or
        slices resampled).

    Raises:
        DataError: if the folder is missing or empty, a file is not a complete DICOM file, it
            holds no image series, several and neither `series_uid` nor `pick` chooses one (or
            `series_uid` is not found), a geometry or rescale tag is damaged (not the standard
            count of finite numbers, orientation rows not unit vectors or parallel), slices
            disagree on size, orientation or pixel spacing, share a position, or are unevenly
            spaced (> 1%) without `resample_uneven`. Each message names the files involved.
        ConfigError: if `pick` is not a known rule, or `allow` names something other than
            plain-valued DICOM keywords.

    Example:
        >>> ct = read_dicom_series("patient01/ct")
        >>> ct.array.shape, ct.spacing            # ((120, 512, 512), (2.5, 0.7, 0.7))
        >>> ct = read_dicom_series("study01", pick="most_slices", resample_uneven=True)
    """
    if pick is not None and pick not in PICK_RULES:
        raise ConfigError(f"`pick` must be None or one of {list(PICK_RULES)}. Received: pick={pick!r}")
    allow = check_allow(allow)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"`folder` must be an existing folder of DICOM files. Received: folder={str(folder)!r}"
        )
    paths = _files(folder)
    if not paths:
        raise DataError(
            f"`folder` contains no DICOM files; expected one file per slice. "
            f"Received: folder={str(folder)!r} (empty)"
        )
    notes: list[str] = []
    by_series: dict[str, list] = {}
    for path in paths:
        ds = read_dataset(path)
        kind = non_image(ds, path)
        if kind:
            notes.append(f"skipped `{_name(path, folder)}`: {kind} is not an image")
            continue
        _require(ds, path, "SeriesInstanceUID")
        by_series.setdefault(str(_value(ds, "SeriesInstanceUID", path)), []).append((path, ds))
    if not by_series:
        raise DataError(
            f"`folder` {str(folder)!r} must hold at least one DICOM image series. "
            f"Received: {len(paths)} non-image objects only"
        )
    files = by_series[_choose(by_series, folder, series_uid, pick, notes)]
    if len(files) == 1:
        path, ds = files[0]
        name = _name(path, folder)
        return image_from_dataset(
            ds, path, name=name, notes=notes, resample_uneven=resample_uneven, allow=allow
        )
    multi = [path for path, ds in files if is_multiframe(ds, path)]
    if multi:
        raise DataError(
            f"A series of several files must be single-frame slices; `{multi[0]}` is multi-frame "
            f"({len(multi)} of {len(files)} files are). Received: {len(files)} files"
        )
    planes = [slice_plane(ds, path, _name(path, folder)) for path, ds in files]
    if any(str(_value(ds, "PhotometricInterpretation", p)).strip() == "MONOCHROME1" for p, ds in files):
        notes.append(MONOCHROME1_NOTE)
    array, spacing, origin, direction, extra = stack_planes(
        planes, str(folder), resample_uneven=resample_uneven, notes=notes
    )
    path, ds = files[0]
    return Image(
        array=array,
        spacing=spacing,
        origin=origin,
        direction=direction,
        modality=str(_value(ds, "Modality", path) or "OT"),
        metadata={**metadata(ds, path, array.shape[0], notes, allow), **extra},
    )


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, hidden files and folders skipped, in path order."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, n) for n in names if not n.startswith(".")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)


def _name(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _slices(files: list) -> int:
    """Number of slices: files, or the frames of a series that is one multi-frame file."""
    if len(files) == 1:
        path, ds = files[0]
        try:
            return _integer(ds, "NumberOfFrames", path, 1)
        except DataError:  # damaged; reported if this series is the one read
            return 1
    return len(files)


def _modality(files: list) -> str:
    path, ds = files[0]
    return str(_value(ds, "Modality", path) or "OT")


def _describe(files: list) -> str:
    path, ds = files[0]
    number = _value(ds, "SeriesNumber", path)
    n = _slices(files)
    return (
        f"{_modality(files)}, {n} slice{'s' * (n != 1)}"
        f"{f', SeriesNumber {number}' if number not in (None, '') else ''}"
    )


def _choose(by_series: dict, folder: Path, series_uid, pick, notes: list[str]) -> str:
    """The SeriesInstanceUID to read (see `read_dicom_series`); notes the series not read."""
    if series_uid is not None:
        if series_uid not in by_series:
            raise DataError(
                f"`series_uid` must be one of the series in {str(folder)!r}: {sorted(by_series)}. "
                f"Received: series_uid={series_uid!r}"
            )
        chosen = series_uid
    elif len(by_series) == 1:
        chosen = next(iter(by_series))
    elif pick is None:
        listing = "; ".join(f"{uid} ({_describe(by_series[uid])})" for uid in sorted(by_series))
        raise DataError(
            f"`folder` {str(folder)!r} holds {len(by_series)} series; pass `series_uid` to choose "
            f"one of: {listing}, or pick='most_slices' for the CT series with the most slices. "
            f"Received: series_uid=None"
        )
    else:
        has_ct = any(_modality(files) == "CT" for files in by_series.values())

        def rank(uid):
            return (_modality(by_series[uid]) == "CT" or not has_ct, _slices(by_series[uid]))

        best = max(rank(uid) for uid in by_series)
        tied = sorted(uid for uid in by_series if rank(uid) == best)
        if len(tied) > 1:
            raise DataError(
                f"pick='most_slices' must find one series with the most slices in "
                f"{str(folder)!r}; {len(tied)} tie, pass `series_uid` to choose one of: "
                f"{'; '.join(f'{uid} ({_describe(by_series[uid])})' for uid in tied)}. "
                f"Received: pick='most_slices'"
            )
        chosen = tied[0]
        notes.append(f"picked the series ({_describe(by_series[chosen])}) by pick='most_slices'")
    others = [_describe(files) for uid, files in sorted(by_series.items()) if uid != chosen]
    if others:
        notes.append(f"{len(others)} other image series not read: {'; '.join(others)}")
    return chosen
