"""Planes (slices of a series, frames of an enhanced object) sorted along their normal and stacked
into a volume, one set of geometry rules for both.

Problems are reported naming the planes involved: differing size, orientation or pixel spacing,
two planes at one position, and gaps uneven by more than `GAP_TOLERANCE` (a missing slice, uneven
spacing), which `resample_uneven=True` interpolates onto a uniform grid instead (`_resample`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import DataError
from serving.io.base_dicom import (
    _numbers,
    _require,
    _value,
    check_greyscale,
    decode,
    modality_values,
    size_of,
)

# Relative spread of slice gaps above which a stack is refused (or resampled on request).
GAP_TOLERANCE = 0.01
# How far from 1 the length of an ImageOrientationPatient direction may be (decimal strings
# written with few digits); beyond it the orientation is garbled, not rounded.
_UNIT_TOLERANCE = 1e-3


@dataclasses.dataclass
class Plane:
    """One slice (a file) or frame (of a multi-frame file) to be stacked.

    Args:
        source: how messages name it, e.g. "/data/ct/IM0001.dcm" or "frame 3 of /data/x.dcm".
        name: how notes name it: no absolute path (notes travel in `Image.metadata`).
        position: ImagePositionPatient (LPS mm).
        orientation: ImageOrientationPatient (row cosines, then column cosines).
        pixel_spacing: PixelSpacing (row spacing, column spacing) in mm.
        size: (Rows, Columns).
        measures: the dataset holding SliceThickness/SpacingBetweenSlices for this plane.
        values: reads the plane's float32 values, `(rows, cols)`; called once, after sorting.
        uid: SOPInstanceUID, to tell a file copied twice in a message.
    """

    source: str
    name: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]
    measures: Any
    values: Callable[[], np.ndarray]
    uid: str | None = None

    @property
    def label(self) -> str:
        return f"`{self.source}`"


def slice_plane(ds, path: Path, name: str) -> Plane:
    """The plane of a single-frame file with Image Plane geometry.

    Raises:
        DataError: if a geometry tag is missing or damaged, the image is not greyscale, or (when
            its values are read) the file holds several frames or undecodable pixels.
    """
    _require(ds, path, "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
             "Rows", "Columns")
    orientation = np.array(_numbers(ds, "ImageOrientationPatient", path, 6))
    position = np.array(_numbers(ds, "ImagePositionPatient", path, 3))
    pixel_spacing = _numbers(ds, "PixelSpacing", path, 2, positive=True)
    size = size_of(ds, path)
    monochrome1 = check_greyscale(ds, path)

    def values() -> np.ndarray:
        stored = decode(ds, path)
        if stored.shape[0] != 1:
            raise DataError(
                f"Only single-frame greyscale DICOM slices are supported in a series of several "
                f"files; `{path}` has pixel data of shape {stored.shape}. "
                f"Received: shape={stored.shape}"
            )
        return modality_values(stored[0], ds, path, monochrome1)

    uid = _value(ds, "SOPInstanceUID", path)
    return Plane(str(path), name, position, orientation, pixel_spacing, size, ds, values,
                 str(uid) if uid else None)


def _names(planes: Sequence[Plane], limit: int = 3) -> str:
    shown = ", ".join(p.label for p in planes[:limit])
    return shown + (f" and {len(planes) - limit} more" if len(planes) > limit else "")


def stack_planes(
    planes: list[Plane], where: str, *, resample_uneven: bool = False, notes: list[str]
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], np.ndarray, dict[str, Any]]:
    """Sort planes along their normal and stack them into a volume.

    Args:
        planes: at least one plane, in file (or frame) order; the first one is the reference.
        where: the folder or file, for messages.
        resample_uneven: interpolate a stack with uneven gaps (or missing slices) linearly along
            the normal onto a uniform grid, instead of refusing it (see `_resample`).
        notes: list to append notes to (shear, resampling, an assumed slice gap).

    Returns:
        `(array, spacing, origin, direction, extra metadata)`: array `(z, rows, cols)` float32;
        spacing `(slice gap, row spacing, column spacing)`; origin the first plane's position;
        direction columns (normal, column cosines, row cosines).

    Raises:
        DataError: planes differ in size, orientation or pixel spacing (naming them), the
            orientation is not two unit vectors, two distinct planes share a position (naming
            both), or gaps are uneven by more than 1% and `resample_uneven` is False (naming the
            planes around the worst gap).
    """
    first = planes[0]
    orientation = first.orientation
    mixed = [
        p
        for p in planes[1:]
        if p.size != first.size or not np.allclose(p.orientation, orientation, atol=1e-4)
    ]
    if mixed:
        other = mixed[0]
        raise DataError(
            f"All slices of a series must share Rows, Columns and ImageOrientationPatient; "
            f"{_names(mixed)} differ{'s' if len(mixed) == 1 else ''} from {first.label}. "
            f"Received: {other.size[0]}x{other.size[1]}, {[float(v) for v in other.orientation]} "
            f"against {first.size[0]}x{first.size[1]}, {[float(v) for v in orientation]}"
        )
    spaced = [p for p in planes[1:] if not np.allclose(p.pixel_spacing, first.pixel_spacing)]
    if spaced:
        raise DataError(
            f"All slices of a series must share PixelSpacing; {_names(spaced)} "
            f"differ{'s' if len(spaced) == 1 else ''} from {first.label}. "
            f"Received: {list(spaced[0].pixel_spacing)} and {list(first.pixel_spacing)}"
        )
    row_cosines, col_cosines = orientation[:3], orientation[3:6]
    with np.errstate(all="ignore"):  # huge values overflow; they are refused just below
        lengths = np.linalg.norm([row_cosines, col_cosines], axis=1)
        normal = np.cross(row_cosines, col_cosines)
        norm = np.linalg.norm(normal)
    if not np.allclose(lengths, 1.0, atol=_UNIT_TOLERANCE) or norm < 1e-6:
        raise DataError(
            f"ImageOrientationPatient must hold two non-parallel unit vectors in "
            f"{first.label}. Received: {orientation.tolist()}"
        )
    normal = normal / norm
    positions = np.array([p.position for p in planes])
    with np.errstate(all="ignore"):  # a non-finite projection is refused below
        along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    planes = [planes[i] for i in order]
    if not np.isfinite(along).all():
        raise DataError(
            f"ImagePositionPatient of every slice in {where!r} must give a finite position "
            f"along the slice normal. Received: positions from {along.min()} to {along.max()} mm"
        )
    _refuse_duplicates(planes, along)
    extra: dict[str, Any] = {}
    if len(planes) == 1:
        gap = _single_gap(planes[0], notes, extra)
    else:
        gap = _check_gaps(planes, along, where, resample_uneven)
        with np.errstate(all="ignore"):
            offsets = positions - positions[0]
            drift = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1).max()
        if drift > 0.01:
            notes.append(
                f"slices are sheared (gantry tilt?): positions drift up to {drift:.3f} mm "
                f"across the slice plane; the image grid ignores the drift"
            )
    array = np.empty((len(planes), *first.size), np.float32)
    for k, plane in enumerate(planes):
        array[k] = plane.values()
    if gap is None:
        array, gap = _resample(array, along, planes, notes)
    direction = np.stack([normal, col_cosines, row_cosines], axis=1)
    spacing = (gap, *first.pixel_spacing)
    return array, spacing, tuple(positions[0]), direction, extra


def _refuse_duplicates(planes: list[Plane], along: np.ndarray) -> None:
    """Refuse two planes at one position, naming both (and saying when they are one SOP
    instance, i.e. a file copied twice)."""
    for i in range(1, len(planes)):
        if along[i] - along[i - 1] < 1e-4:
            a, b = planes[i - 1], planes[i]
            copy = " (one SOPInstanceUID: a file copied twice)" if a.uid and a.uid == b.uid else ""
            raise DataError(
                f"Slices of a series must have distinct positions along the slice normal; "
                f"{a.label} and {b.label} coincide{copy}. "
                f"Received: position {along[i]:.4f} mm twice"
            )


def _single_gap(plane: Plane, notes: list[str], extra: dict[str, Any]) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        (value,) = _numbers(plane.measures, keyword, plane.source, 1) or (0.0,)
        if value < 0:
            raise DataError(
                f"`{keyword}` in {plane.label} must be a positive number (or 0 or empty when not "
                f"known). Received: {value}"
            )
        if value > 0:  # 0 or empty: not recorded, try the next tag
            return value
    notes.append("one slice without SpacingBetweenSlices or SliceThickness: slice gap set to 1.0")
    extra["spacing_assumed_axes"] = [0]
    return 1.0


def _check_gaps(planes, along, where: str, resample_uneven: bool) -> float | None:
    """The uniform slice gap, or None when gaps are uneven and `resample_uneven` allows it."""
    gaps = np.diff(along)
    gap = float(np.median(gaps))
    errors = np.abs(gaps - gap)
    if float(errors.max()) <= GAP_TOLERANCE * gap:
        return gap
    if resample_uneven:
        return None
    i = int(np.argmax(errors))
    irregular = int(np.sum(errors > GAP_TOLERANCE * gap))
    kind = "missing slice?" if gaps[i] > 1.5 * gap else "uneven spacing"
    raise DataError(
        f"Slice gaps of a series must be uniform within {GAP_TOLERANCE:.0%} (missing slice?) "
        f"in {where!r}; median gap {gap:.4f} mm, but {gaps[i]:.4f} mm between {planes[i].label} "
        f"and {planes[i + 1].label} ({kind}; {irregular} irregular gap{'s' * (irregular > 1)}); "
        f"pass resample_uneven=True to interpolate onto a uniform grid. "
        f"Received: gaps from {gaps.min():.4f} to {gaps.max():.4f} mm"
    )


def _resample(array: np.ndarray, along: np.ndarray, planes, notes: list[str]):
    """Linear interpolation along the normal onto a uniform grid from the first to the last
    plane, with about the median gap: `n = round(extent / median) + 1` planes, gap
    `extent / (n - 1)`. A grid plane that falls on a source plane takes its values exactly.

    Raises:
        DataError: if the grid would hold more than 4x the source planes (a stray position far
            away, not uneven spacing).
    """
    gaps = np.diff(along)
    median = float(np.median(gaps))
    extent = float(along[-1] - along[0])
    n = int(round(extent / median)) + 1
    if n > 4 * len(planes):
        raise DataError(
            f"An unevenly spaced series can be resampled onto at most 4x its {len(planes)} "
            f"slices; from {planes[0].label} to {planes[-1].label} it would need {n}. "
            f"Received: extent {extent:.4f} mm, median gap {median:.4f} mm"
        )
    step = extent / (n - 1)
    grid = along[0] + step * np.arange(n)
    lower = np.clip(np.searchsorted(along, grid, side="right") - 1, 0, len(along) - 2)
    weight = (grid - along[lower]) / (along[lower + 1] - along[lower])
    out = np.empty((n, *array.shape[1:]), np.float32)
    for k, (j, w) in enumerate(zip(lower, weight, strict=True)):
        w = float(np.clip(w, 0.0, 1.0))
        # float64 arithmetic, one rounding to float32 on assignment
        out[k] = array[j] if w < 1e-6 else (1 - w) * array[j].astype(np.float64) + w * array[j + 1]
    odd = [i for i in np.flatnonzero(np.abs(gaps - median) > GAP_TOLERANCE * median)]
    pairs = ", ".join(f"{gaps[i]:.4f} mm `{planes[i].name}`-`{planes[i + 1].name}`" for i in odd[:3])
    notes.append(
        f"resampled {len(planes)} unevenly spaced slices onto {n} slices every {step:.4f} mm "
        f"(linear along the normal; median gap {median:.4f} mm); irregular gaps: {pairs}"
        f"{f' and {len(odd) - 3} more' if len(odd) > 3 else ''}"
    )
    return out, step
