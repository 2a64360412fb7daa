"""The array steps of `serving.preprocessing`: resampling, crop/pad, foreground box, intensity.

Numpy only (no scipy), so that a device with numpy and onnxruntime reproduces training
preprocessing bit for bit. Each function works on one array and knows nothing of the spec;
`serving.preprocessing` chains them and records what they did.

Resampling grid: output index `j` on an axis of input length `n` and output length `m` samples
input coordinate `(j + 0.5) * n / m - 0.5`, clamped to `[0, n - 1]`: the field of view is kept
(the grid is scaled about the centre of the array) and resampling back to `n` uses the inverse
grid. Every order ("nearest", "linear", "cubic") samples the same coordinates.
"""

from __future__ import annotations

import numpy as np

from serving.errors import ConfigError

ORDERS = ("linear", "nearest", "cubic")

# Keys (1981) cubic convolution with a = -0.5: interpolating (weight 1 at distance 0, 0 at the
# other integers) and exact for polynomials up to degree 2, so a linear HU ramp stays a ramp.
# It is not scipy's cubic B-spline, which smooths and needs a pre-filter.
_KEYS_A = -0.5


def _keys_weight(distance: np.ndarray) -> np.ndarray:
    """Keys kernel at `distance` (float64, any shape)."""
    t = np.abs(distance)
    a = _KEYS_A
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return np.where(t <= 1.0, near, np.where(t < 2.0, far, 0.0))


def resample_array(array: np.ndarray, out_shape: tuple[int, ...], order: str = "linear") -> np.ndarray:
    """Resample `array` to `out_shape`, keeping the field of view (grid scaled about its centre).

    Output index `j` on an axis of input length `n` and output length `m` samples input coordinate
    `(j + 0.5) * n / m - 0.5`, clamped to the array: the exact inverse grid of resampling back.
    "cubic" is separable Keys cubic convolution (a = -0.5) with edge voxels repeated beyond the
    array; it may overshoot the input range next to a sharp edge.

    Args:
        array: any-dimensional array.
        out_shape: target length per axis.
        order: "linear", "nearest" or "cubic".

    Returns:
        Array of shape `out_shape`, float32 for "linear" and "cubic", input dtype for "nearest".

    Raises:
        ConfigError: if `order` is not one of `ORDERS`.
    """
    if order not in ORDERS:
        raise ConfigError(f"`order` must be one of {ORDERS}. Received: order={order!r}")
    out = np.asarray(array)
    if order != "nearest":
        out = out.astype(np.float32, copy=False)
    for axis, (n, m) in enumerate(zip(out.shape, out_shape)):
        if n == m:
            continue
        coords = (np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5
        coords = np.clip(coords, 0.0, n - 1)
        if order == "nearest":
            out = np.take(out, np.floor(coords + 0.5).astype(np.intp), axis=axis)
            continue
        lo = np.floor(coords).astype(np.intp)
        shape = [1] * out.ndim
        shape[axis] = m
        if order == "cubic":
            out = _cubic_axis(out, axis, lo, coords - lo, shape)
            continue
        hi = np.minimum(lo + 1, n - 1)
        w = (coords - lo).astype(np.float32).reshape(shape)
        # `take(lo) * (1 - w) + take(hi) * w`, computed in place: the same float32 operations
        # in the same order (bit-identical), with two temporaries fewer.
        below = np.take(out, lo, axis=axis)
        below *= 1.0 - w
        above = np.take(out, hi, axis=axis)
        above *= w
        below += above
        out = below
    return out


def _cubic_axis(out: np.ndarray, axis: int, lo: np.ndarray, frac: np.ndarray, shape: list[int]):
    """Keys cubic along `axis`: taps `lo - 1 .. lo + 2` (clamped), weights at `frac - k`.

    Written as `a[lo] + sum_k w_k * (a[lo + k] - a[lo])` (the weights sum to 1), so that a
    constant region stays exactly constant in float32 (-1024 HU air stays -1024).
    """
    n = out.shape[axis]
    base = np.take(out, lo, axis=axis)
    total = base.copy()
    for k in (-1, 1, 2):
        term = np.take(out, np.clip(lo + k, 0, n - 1), axis=axis)
        term -= base
        term *= _keys_weight(frac - k).astype(np.float32).reshape(shape)
        total += term
    return total


def crop_or_pad(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], fill: float):
    """Window of `array` of length `size` starting at `start` per axis, `fill` outside it.

    A negative `start`, or a window past the end, pads; a window inside the array crops.
    """
    out = np.full(size, fill, dtype=array.dtype)
    src, dst = [], []
    for s, m, n in zip(start, size, array.shape):
        lo, hi = max(s, 0), min(s + m, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def foreground_mask(array: np.ndarray, ndim: int, threshold: float) -> np.ndarray:
    """Voxels above `threshold` in any channel: boolean, the spatial shape `array.shape[:ndim]`."""
    above = array > threshold
    return above.any(axis=tuple(range(ndim, array.ndim))) if array.ndim > ndim else above


def foreground_box(
    mask: np.ndarray, margin: tuple[int | None, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box of the `True` voxels of `mask`, widened by `margin` voxels.

    Args:
        mask: boolean, one axis per entry of `margin`.
        margin: voxels added on both sides per axis, clamped to the array; `None` keeps the
            whole axis (the slice axis of a 2D slice model, so that every slice is kept).

    Returns:
        `(start, shape)` per axis. A mask with no `True` voxel gives the whole array, so an
        image with nothing above the threshold (e.g. all air) is kept rather than refused.
    """
    start, shape = [], []
    for axis, pad in enumerate(margin):
        n = mask.shape[axis]
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others)) if pad is not None else ()
        if len(hits) == 0:
            start.append(0)
            shape.append(n)
            continue
        lo, hi = max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, n)
        start.append(lo)
        shape.append(hi - lo)
    return tuple(start), tuple(shape)


def intensity_stats(
    array: np.ndarray, ndim: int, mask: np.ndarray | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation per channel, over `mask` (when it has a `True` voxel) or all.

    Args:
        array: `(*spatial)` or `(*spatial, C)`.
        ndim: number of spatial axes.
        mask: boolean of the spatial shape, e.g. the foreground; `None` or all `False` = every
            voxel.

    Returns:
        `(mean, std)`, one float per channel (one for a grey image), computed in float64. A
        standard deviation below 1e-6 (a constant image) is returned as 1.0, so that the
        z-score centres the image instead of dividing by zero.
    """
    channels = int(np.prod(array.shape[ndim:], dtype=int))
    values = array.reshape(-1, channels)
    if mask is not None and mask.any():
        values = values[mask.reshape(-1)]
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def zscore(array: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """`(array - mean) / std` per channel (trailing axis), in float32, in place on `array`."""
    array -= np.asarray(mean, np.float32)
    array /= np.asarray(std, np.float32)
    return array
