"""Geometry for files that may not carry it: `.npy`, `.npz`, PNG, JPEG and TIFF.

Their readers take each of spacing, origin and direction from the first of:

1. the reader's argument (`spacing=`, `origin=`, `direction=`);
2. a sidecar JSON beside the file, `<file>.json` (`scan.npy.json`) or else `<stem>.json`
   (`scan.json`), e.g. `{"spacing": [2.5, 0.7, 0.7], "origin": [0, 0, 0], "modality": "CT"}`:
   `spacing` required, `origin`, `direction` and `modality` optional, other keys ignored; values
   in array order `(z, y, x)`, millimetres, LPS, `direction` as `Image.direction` written row by
   row (column `a` is the unit vector of axis `a`);
3. what the file itself records (TIFF resolution tags, `spacing` stored in an `.npz`);
4. otherwise spacing 1.0, origin 0 and the axial direction. The spacing is then *assumed*, and
   the image says so: `metadata["spacing_source"] == "assumed"` (or, when the file knows some axes
   but not all, e.g. a TIFF stack without slice spacing, `metadata["spacing_assumed_axes"]`).
   `serving.preprocessing.preprocess` refuses to resample an assumed axis to a target spacing,
   so 1.0 is never silently taken for millimetres.

`metadata["spacing_source"]` is "argument", "sidecar", "file" or "assumed".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import DataError


def sidecar_path(path: str | os.PathLike) -> Path | None:
    """The sidecar JSON of `path` (`<file>.json`, else `<stem>.json`), or None if neither exists."""
    path = Path(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def _read_sidecar(path: Path) -> tuple[dict[str, Any], str]:
    side = sidecar_path(path)
    if side is None:
        return {}, ""
    try:
        values = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(
            f"Sidecar `{side}` must be a readable JSON file. Received: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(values, dict) or "spacing" not in values:
        shown = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise DataError(
            f"Sidecar `{side}` must be a JSON object with a `spacing` list (optional `origin`, "
            f"`direction`, `modality`). Received: {shown}"
        )
    return values, f"sidecar `{side}`"


def _numbers(value: Any, shape: tuple[int, ...], what: str, positive: bool = False) -> np.ndarray:
    """`value` as a finite float array of `shape`, or a `DataError` naming `what`."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != shape or not np.isfinite(array).all() or (positive and np.any(array <= 0)):
        rule = f"{shape[0]} positive values" if positive else f"shape {shape} of finite numbers"
        raise DataError(f"{what} must have {rule}. Received: {value!r}")
    return array


def resolve_geometry(
    path: str | os.PathLike,
    ndim: int,
    spacing=None,
    origin=None,
    direction=None,
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`Image` keyword arguments for a file's geometry, from the sources in the module docstring.

    Args:
        path: the image file; its sidecar is looked for beside it.
        ndim: number of spatial axes (2 or 3).
        spacing: mm per spatial axis, in array order; wins over every other source.
        origin: LPS mm of the first voxel's centre.
        direction: `(ndim, ndim)` direction cosines (column `a` = axis `a`).
        recorded: what the file records: "spacing" (None for an axis it does not know),
            "origin", "direction".

    Returns:
        A dict with "spacing", "origin", "direction", "metadata" (`spacing_source`, and
        `spacing_assumed_axes` when only some axes are known) and "modality" if the sidecar
        gives one.

    Raises:
        DataError: if the sidecar is not valid JSON or lacks `spacing`, or a value does not fit
            `ndim` (the message names its source).
    """
    side, side_name = _read_sidecar(Path(path))
    recorded = recorded or {}
    given = {"spacing": spacing, "origin": origin, "direction": direction}
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, shape in (("spacing", (ndim,)), ("origin", (ndim,)), ("direction", (ndim, ndim))):
        for source, where, value in (
            ("argument", f"`{name}`", given[name]),
            ("sidecar", f"`{name}` in {side_name}", side.get(name)),
            ("file", f"`{name}` recorded in `{path}`", recorded.get(name)),
        ):
            if value is None:
                continue
            if source == "file" and name == "spacing" and isinstance(value, (list, tuple)):
                value = [1.0 if s is None else s for s in value]  # None: an axis the file lacks
            array = _numbers(value, shape, where, positive=name == "spacing")
            out[name], sources[name] = (tuple(array) if array.ndim == 1 else array), source
            break
    metadata: dict[str, Any] = {"spacing_source": sources.get("spacing", "assumed")}
    if "spacing" not in out:
        out["spacing"] = (1.0,) * ndim
    elif sources["spacing"] == "file":
        assumed = [a for a, s in enumerate(recorded["spacing"]) if s is None]
        if len(assumed) == ndim:
            metadata["spacing_source"] = "assumed"
        elif assumed:
            metadata["spacing_assumed_axes"] = assumed
    if isinstance(side.get("modality"), str) and side["modality"]:
        out["modality"] = side["modality"]
    out["metadata"] = metadata
    return out
