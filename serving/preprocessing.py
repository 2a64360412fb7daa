"""The one definition of how a raw image becomes model input, and its exact inverse.

Numpy only, so that a device with numpy and onnxruntime reproduces training preprocessing bit for
bit. Intensity normalisation is *not* here: it is a layer inside the Keras graph, so every exported
artefact takes raw intensities (Hounsfield units for CT).

Steps, per array axis:
1. resample to `target_spacing` (linear for images and probabilities, nearest for label maps),
   keeping the physical field of view (the grid is scaled about the volume's centre);
2. centre crop or pad to `size` (padding with `pad_value`, air for CT).

`invert` undoes both, returning an array on the source grid.

A multi-channel image (`image.channels > 1`, e.g. RGB) is resampled and cropped on its spatial
axes only; its trailing channel axis passes through untouched. An axis whose spacing the reader
assumed (`image.assumed_spacing_axes`, e.g. a `.npy` without a sidecar) is never resampled to a
target spacing: `preprocess` refuses, so 1.0 is never taken for millimetres.

Example:
    >>> spec = PreprocessSpec(target_spacing=(None, 1.5, 1.5), size=(None, 240, 240))
    >>> x, record = preprocess(image, spec)          # x: (z, 240, 240) float32
    >>> probs_src = invert(probs, record)            # probs_src: image.shape
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from serving.array_checks import finite_real_array
from serving.errors import ConfigError, DataError
from serving.image import Image

_ORDERS = ("linear", "nearest")


def _is_finite_number(value) -> bool:
    """Whether `value` is a real number other than NaN and +-inf."""
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image into model input.

    Args:
        target_spacing: mm per array axis; `None` keeps the source spacing of that axis.
        size: output length per array axis after centre crop/pad; `None` keeps the resampled
            length.
        pad_value: value used where padding is needed (-1024 HU is air).

    Raises:
        ConfigError: if the entries do not pair up, a spacing or size is not positive, or
            `pad_value` is not a finite number.
    """

    target_spacing: tuple[float | None, ...]
    size: tuple[int | None, ...]
    pad_value: float = -1024.0

    def __post_init__(self):
        spacing = tuple(None if s is None else float(s) for s in self.target_spacing)
        size = tuple(None if s is None else int(s) for s in self.size)
        if len(spacing) != len(size):
            raise ConfigError(
                "`target_spacing` and `size` must have one entry per array axis. "
                f"Received: target_spacing={self.target_spacing}, size={self.size}"
            )
        if any(s is not None and not (np.isfinite(s) and s > 0) for s in spacing):
            raise ConfigError(
                f"`target_spacing` entries must be positive or null. Received: {self.target_spacing}"
            )
        if any(s is not None and s <= 0 for s in size):
            raise ConfigError(f"`size` entries must be positive or null. Received: size={self.size}")
        # A NaN pad value would reach the model wherever a case is padded.
        if not _is_finite_number(self.pad_value):
            raise ConfigError(
                f"`pad_value` must be a finite number. Received: pad_value={self.pad_value!r}"
            )
        object.__setattr__(self, "target_spacing", spacing)
        object.__setattr__(self, "size", size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_spacing": list(self.target_spacing),
            "size": list(self.size),
            "pad_value": self.pad_value,
            "crop_pad": "centre",
            "resample": "linear (image), nearest (labels); field of view kept",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        return cls(
            target_spacing=tuple(d["target_spacing"]),
            size=tuple(d["size"]),
            pad_value=float(d.get("pad_value", -1024.0)),
        )


@dataclasses.dataclass(frozen=True)
class PreprocessRecord:
    """What `preprocess` did to one image, enough to map model output back to the source grid."""

    source_shape: tuple[int, ...]
    source_spacing: tuple[float, ...]
    resampled_shape: tuple[int, ...]
    crop_start: tuple[int, ...]  # index in the resampled array of output index 0 (<0 = padding)
    output_shape: tuple[int, ...]

    @property
    def output_spacing(self) -> tuple[float, ...]:
        return tuple(
            s * n / m for s, n, m in zip(self.source_spacing, self.source_shape, self.resampled_shape)
        )


def resample_array(array: np.ndarray, out_shape: tuple[int, ...], order: str = "linear") -> np.ndarray:
    """Resample `array` to `out_shape`, keeping the field of view (grid scaled about its centre).

    Output index `j` on an axis of input length `n` and output length `m` samples input coordinate
    `(j + 0.5) * n / m - 0.5`, clamped to the array: the exact inverse grid of resampling back.

    Args:
        array: any-dimensional array.
        out_shape: target length per axis.
        order: "linear" or "nearest".

    Returns:
        Array of shape `out_shape`, float32 for "linear", input dtype for "nearest".
    """
    if order not in _ORDERS:
        raise ConfigError(f"`order` must be one of {_ORDERS}. Received: order={order!r}")
    out = np.asarray(array)
    if order == "linear":
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
        hi = np.minimum(lo + 1, n - 1)
        shape = [1] * out.ndim
        shape[axis] = m
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


def _crop_or_pad(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], fill: float):
    """Window of `array` of length `size` starting at `start` per axis, `fill` outside it."""
    out = np.full(size, fill, dtype=array.dtype)
    src, dst = [], []
    for s, m, n in zip(start, size, array.shape):
        lo, hi = max(s, 0), min(s + m, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def plan(shape: tuple[int, ...], spacing: tuple[float, ...], spec: PreprocessSpec) -> PreprocessRecord:
    """The record `preprocess` would produce for an image of this shape and spacing."""
    if len(shape) != len(spec.size):
        raise DataError(
            f"The preprocessing spec has {len(spec.size)} axes but the image has {len(shape)}. "
            f"Received: image shape={tuple(shape)}, spec size={spec.size}"
        )
    resampled = tuple(
        n if t is None else max(1, int(round(n * s / t)))
        for n, s, t in zip(shape, spacing, spec.target_spacing)
    )
    output = tuple(r if m is None else m for r, m in zip(resampled, spec.size))
    start = tuple((r - m) // 2 for r, m in zip(resampled, output))
    return PreprocessRecord(
        source_shape=tuple(int(n) for n in shape),
        source_spacing=tuple(float(s) for s in spacing),
        resampled_shape=resampled,
        crop_start=start,
        output_shape=output,
    )


def preprocess(
    image: Image, spec: PreprocessSpec, order: str = "linear"
) -> tuple[np.ndarray, PreprocessRecord]:
    """Resample and crop/pad an image into model input.

    Args:
        image: source image; `image.array` shape `(z, y, x)` (or `(y, x)`), plus a trailing
            channel axis `C` when `image.channels > 1`.
        spec: the preprocessing spec (from the config or a bundle manifest), one entry per
            spatial axis.
        order: "linear" for intensities, "nearest" for label maps.

    Returns:
        `(array, record)`: `array` has shape `record.output_shape` (plus `(C,)` for a
        multi-channel image; float32 for "linear"); `record` lets `invert` map model output back
        to `image`'s grid.

    Raises:
        DataError: if the image array is not real numbers (e.g. complex) or holds NaN or +-inf
            (counted in the message), its spatial rank does not match the spec, or the spec
            resamples an axis whose spacing the reader only assumed.
    """
    record = plan(image.shape, image.spacing, spec)
    assumed = [a for a in image.assumed_spacing_axes if spec.target_spacing[a] is not None]
    if assumed:
        raise DataError(
            f"Resampling to `target_spacing` needs the image's real spacing, but the spacing of "
            f"axes {assumed} is unknown (the reader assumed 1.0): give it with a sidecar JSON "
            '(`<file>.json` or `<stem>.json` holding {"spacing": [...]}) or the reader\'s `spacing` '
            "argument, or keep the source spacing (null) on those axes. Received: "
            f"spacing={image.spacing} ({image.metadata.get('spacing_source', 'assumed')}), "
            f"target_spacing={spec.target_spacing}"
        )
    # Before resampling, which would smear one NaN over its neighbours.
    array = finite_real_array(image.array, "`image`")
    channels = array.shape[image.ndim :]  # () for grey, (C,) untouched by both steps
    resampled = resample_array(array, record.resampled_shape + channels, order)
    fill = spec.pad_value if order == "linear" else 0
    out = _crop_or_pad(
        resampled, record.crop_start + (0,) * len(channels), record.output_shape + channels, fill
    )
    return out, record


def invert(array: np.ndarray, record: PreprocessRecord, order: str = "linear", fill: float = 0.0):
    """Map an array on the preprocessed grid (e.g. probabilities) back to the source grid.

    Args:
        array: shape `record.output_shape`, optionally with trailing channel axes.
        record: from `preprocess`.
        order: "linear" for probabilities, "nearest" for labels.
        fill: value for source regions that were cropped away (0 = background).

    Returns:
        Array of shape `record.source_shape` (plus any trailing channel axes).
    """
    n = len(record.output_shape)
    if tuple(array.shape[:n]) != record.output_shape:
        raise DataError(
            f"Array to invert must have the preprocessed shape {record.output_shape}. "
            f"Received: shape={array.shape}"
        )
    extra = tuple(array.shape[n:])
    back_start = tuple(-s for s in record.crop_start)
    uncropped = _crop_or_pad(
        np.moveaxis(array.reshape(record.output_shape + (-1,)), -1, 0),
        (0,) + back_start,
        (int(np.prod(extra, dtype=int)),) + record.resampled_shape,
        fill,
    )
    out = resample_array(uncropped, uncropped.shape[:1] + record.source_shape, order)
    return np.moveaxis(out, 0, -1).reshape(record.source_shape + extra)

