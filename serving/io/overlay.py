"""A PNG of one slice of an image with a mask drawn over it: each label filled in its colour
(blended with `alpha`) and outlined at full colour.

The slice is shown at its native pixels (one PNG pixel per voxel, `cols` x `rows`), windowed to
grey: CT through `CT_WINDOW` (lung) unless `window` is given, other modalities between the 1st and
99th percentile of the slice. Only voxels of the mask change colour; every other pixel is the plain
windowed grey.

Pillow is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.base_writer import atomic_file, label_map
from serving.lazy_import import lazy_import

# (center, width) in HU: the lung window, also the CT series writer's display default.
CT_WINDOW = (-600.0, 1500.0)
# RGB per label 1, 2, ... (repeating): red, green, blue, yellow, cyan, magenta, orange.
PALETTE = ((255, 0, 0), (0, 200, 0), (0, 90, 255), (255, 220, 0), (0, 220, 220), (230, 0, 230),
           (255, 140, 0))


def window_to_grey(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """uint8 grey of `values` through a (center, width) window: `center - width / 2` is black,
    `center + width / 2` white, linear and rounded in between."""
    center, width = (float(v) for v in window)
    scaled = (np.asarray(values, np.float64) - (center - width / 2.0)) / width * 255.0
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def write_overlay(
    image: Image,
    mask: Image | np.ndarray,
    path: str | os.PathLike,
    *,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
    alpha: float = 0.4,
    contour: bool = True,
) -> Path:
    """Write a PNG of one slice of `image` with `mask` drawn over it (see the module docstring).

    Args:
        image: grey `Image`, 2D `(y, x)` or 3D `(z, y, x)`.
        mask: label map on the same grid (an `Image`, or an array of `image.shape`): 0 is
            background, each label k > 0 gets `PALETTE[(k - 1) % 7]`.
        path: the PNG to write (written under a temporary name, then renamed).
        slice_index: the axis-0 slice of a 3D image; default the slice with the most mask
            voxels (the middle one when the mask is empty).
        window: (center, width) for grey levels; default `CT_WINDOW` for CT, else the slice's
            1st to 99th percentile.
        alpha: opacity of the fill, 0 (outline only) to 1.
        contour: outline each label's region (its voxels with a neighbour outside it) at full
            colour.

    Returns:
        The written path.

    Raises:
        DataError: if the image is not grey, the mask is not a label map on its grid, or
            `slice_index` is outside the volume.
        ConfigError: if `window` width is not > 0 or `alpha` is not in [0, 1].
    """
    pil = lazy_import("PIL.Image", pip_name="pillow", purpose="write PNG overlays")
    image.require_grey("Writing an overlay")
    if not isinstance(mask, Image):
        mask = image.with_array(np.asarray(mask))
    labels = label_map(mask, "Writing an overlay")
    if mask.shape != image.shape or not mask.same_geometry(image):
        raise DataError(
            f"`mask` must be on the grid of `image` (shape, spacing, origin, direction). "
            f"Received: mask shape={mask.shape}, image shape={image.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    values = np.asarray(image.array)
    if image.ndim == 3:
        if slice_index is None:
            area = labels.reshape(len(labels), -1).astype(bool).sum(axis=1)
            slice_index = int(area.argmax()) if area.any() else len(labels) // 2
        if not 0 <= slice_index < len(labels):
            raise DataError(
                f"`slice_index` must be in [0, {len(labels) - 1}]. Received: slice_index={slice_index}"
            )
        values, labels = values[slice_index], labels[slice_index]
    if window is None:
        if image.modality == "CT":
            window = CT_WINDOW
        else:
            lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
            window = ((lo + hi) / 2.0, max(hi - lo, 1e-6))
    if not float(window[1]) > 0:
        raise ConfigError(f"`window` width must be > 0. Received: window={tuple(window)}")
    rgb = np.repeat(window_to_grey(values, window)[..., None], 3, axis=-1).astype(np.float64)
    for label in (int(v) for v in np.unique(labels) if v > 0):
        region = labels == label
        colour = np.array(PALETTE[(label - 1) % len(PALETTE)], np.float64)
        rgb[region] = (1.0 - alpha) * rgb[region] + alpha * colour
        if contour:
            rgb[region & ~_eroded(region)] = colour
    out = np.rint(rgb).astype(np.uint8)
    path = Path(path)
    with atomic_file(path) as tmp:
        pil.fromarray(out).save(tmp, format="PNG")
    return path


def _eroded(region: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are all in `region` (outside the slice counts as outside)."""
    padded = np.pad(region, 1, constant_values=False)
    return (
        region
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
