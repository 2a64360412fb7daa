"""Findings of a predicted mask: one row per connected component, written as CSV or JSON.

Each finding gives its class, size, centroid and bounding box twice: in voxel indices `(z, y, x)`
of the mask's array (from 0) and in DICOM patient coordinates (LPS, millimetres: `l` grows towards
the patient's left, `p` posterior, `s` superior), through `Image.index_to_physical`:

| column | meaning |
|---|---|
| `id` | 1, 2, ... by label, then by decreasing volume |
| `label`, `class_name` | the mask value and its name |
| `voxels`, `volume_mm3`, `volume_ml` | size: voxel count, times the voxel volume |
| `centroid_z`, `centroid_y`, `centroid_x` | mean voxel index (fractional) |
| `centroid_l_mm`, `centroid_p_mm`, `centroid_s_mm` | that point in LPS |
| `bbox_min_z` ... `bbox_max_x` | first and last voxel index on each axis (inclusive) |
| `bbox_min_l_mm` ... `bbox_max_s_mm` | the LPS box around the centres of those corner voxels |
| `max_probability`, `mean_probability` | over the component's voxels, when a map is given |

scipy is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.base_writer import atomic_file, label_map
from serving.lazy_import import lazy_import

_AXES = ("z", "y", "x")
_LPS = ("l", "p", "s")
FINDING_COLUMNS = (
    "id", "label", "class_name", "voxels", "volume_mm3", "volume_ml",
    *(f"centroid_{a}" for a in _AXES), *(f"centroid_{a}_mm" for a in _LPS),
    *(f"bbox_{end}_{a}" for end in ("min", "max") for a in _AXES),
    *(f"bbox_{end}_{a}_mm" for end in ("min", "max") for a in _LPS),
    "max_probability", "mean_probability",
)  # fmt: skip


def mask_findings(
    mask: Image,
    probability: Image | None = None,
    *,
    class_names: Sequence[str] | None = None,
    connectivity: int = 1,
) -> list[dict[str, Any]]:
    """One finding per connected component of each label of `mask` (see the module docstring).

    Args:
        mask: 3D grey label map `(z, y, x)`: 0 background, 1..K classes (bool or whole numbers).
        probability: optional map on the same grid: grey `(z, y, x)` (e.g. the foreground
            probability), or `(z, y, x, C)` with one channel per class, channel `label` read for
            a finding of that label.
        class_names: names of labels 1..K; default "class 1", "class 2"...
        connectivity: which neighbours join a component: 1 = faces (6 in 3D), 2 = faces and
            edges (18), 3 = also corners (26).

    Returns:
        A list of dicts with the keys of `FINDING_COLUMNS` (probabilities None without a map).

    Raises:
        DataError: if `mask` is not a 3D grey label map, `probability` is not on its grid (or
            lacks a channel for a label), or a label has no name in `class_names`.
        ConfigError: if `connectivity` is not 1, 2 or 3.
        DependencyError: if scipy is not installed.
    """
    ndimage = lazy_import("scipy.ndimage", pip_name="scipy", purpose="find connected components")
    labels = label_map(mask, "Finding connected components")
    if mask.ndim != 3:
        raise DataError(f"`mask` must be 3D (z, y, x) to list findings. Received: shape={mask.shape}")
    if connectivity not in (1, 2, 3):
        raise ConfigError(f"`connectivity` must be 1, 2 or 3. Received: connectivity={connectivity!r}")
    values = _probability_values(mask, probability)
    present = [int(v) for v in np.unique(labels) if v > 0]
    names = list(class_names) if class_names is not None else None
    if names is not None and present and present[-1] > len(names):
        raise DataError(
            f"`class_names` must name every label in `mask`; it names {len(names)}. "
            f"Received: label {present[-1]}"
        )
    if values is not None and values.ndim == 4 and present and present[-1] >= values.shape[-1]:
        raise DataError(
            f"A per-class `probability` map must have a channel for every label in `mask`. "
            f"Received: {values.shape[-1]} channels, label {present[-1]}"
        )
    structure = ndimage.generate_binary_structure(3, connectivity)
    voxel_mm3 = float(np.prod(mask.spacing))
    rows = []
    for label in present:
        components, count = ndimage.label(labels == label, structure=structure)
        found = []
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            start = np.array([s.start for s in box])
            voxels = np.argwhere(components[box] == index) + start
            found.append(_finding(mask, label, voxels, box, values, voxel_mm3))
        found.sort(key=lambda row: -row["voxels"])  # stable: ties keep scan order
        for row in found:
            row["class_name"] = names[label - 1] if names is not None else f"class {label}"
        rows += found
    for number, row in enumerate(rows, start=1):
        row["id"] = number
    return [{key: row[key] for key in FINDING_COLUMNS} for row in rows]


def write_findings(findings: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write findings (from `mask_findings`) as CSV (`.csv`, one row each, a header even when
    there are none) or JSON (`.json`: `{"coordinates": ..., "findings": [...]}`).

    The file is written under a temporary name and renamed into place.

    Raises:
        DataError: if `path` ends neither in .csv nor .json.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"`path` must end in .csv or .json. Received: path={str(path)!r}")
    with atomic_file(path) as tmp:
        if suffix == ".json":
            document = {
                "coordinates": "voxel indices (z, y, x) from 0; l/p/s in DICOM patient LPS mm",
                "findings": findings,
            }
            tmp.write_text(json.dumps(document, indent=2) + "\n")
        else:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FINDING_COLUMNS)
                writer.writeheader()
                writer.writerows(findings)
    return path


def _probability_values(mask: Image, probability: Image | None) -> np.ndarray | None:
    if probability is None:
        return None
    if not probability.same_geometry(mask):
        raise DataError(
            f"`probability` must be on the grid of `mask` (shape, spacing, origin, direction). "
            f"Received: probability shape={probability.shape}, mask shape={mask.shape}"
        )
    return np.asarray(probability.array, np.float64)


def _finding(mask: Image, label: int, voxels: np.ndarray, box, values, voxel_mm3: float) -> dict:
    """The columns of one component; `voxels` is `(N, 3)` indices."""
    lo = np.array([s.start for s in box])
    hi = np.array([s.stop - 1 for s in box])
    centroid = voxels.mean(axis=0)
    corners = np.array(list(itertools.product(*zip(lo, hi))), float)
    corners_mm = mask.index_to_physical(corners)
    row: dict[str, Any] = {
        "label": label,
        "voxels": len(voxels),
        "volume_mm3": len(voxels) * voxel_mm3,
        "volume_ml": len(voxels) * voxel_mm3 / 1000.0,
        **_named("centroid_{}", _AXES, centroid),
        **_named("centroid_{}_mm", _LPS, mask.index_to_physical(centroid)),
        **_named("bbox_min_{}", _AXES, lo, int),
        **_named("bbox_max_{}", _AXES, hi, int),
        **_named("bbox_min_{}_mm", _LPS, corners_mm.min(axis=0)),
        **_named("bbox_max_{}_mm", _LPS, corners_mm.max(axis=0)),
        "max_probability": None,
        "mean_probability": None,
    }
    if values is not None:
        index = tuple(voxels.T)
        inside = values[index + (label,)] if values.ndim == 4 else values[index]
        row["max_probability"] = float(inside.max())
        row["mean_probability"] = float(inside.mean())
    return row


def _named(pattern: str, axes: Sequence[str], numbers, cast=float) -> dict[str, Any]:
    return {pattern.format(axis): cast(n) for axis, n in zip(axes, numbers)}
