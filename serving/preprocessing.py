"""The one definition of how a raw image becomes model input, and its inverse.

Numpy only, so that a device with numpy and onnxruntime reproduces training preprocessing bit for
bit. Dataset-wide intensity normalisation (the CT HU window) is *not* here: it is a layer inside
the Keras graph, so every exported artefact takes raw intensities. The per-image z-score is here
because a 2D slice model's graph never sees the whole volume.

Steps, in this order (all but 3 and 4 off unless the spec asks for them):
1. `clip`: clip intensities to `[low, high]` (HU). No inverse: clipped values are lost.
2. `crop_foreground`: crop to the bounding box of the voxels above the threshold (e.g. -500 HU,
   the body; compared with the clipped intensities), widened by `foreground_margin` voxels per
   axis. An axis whose margin is `None` is kept whole: by default the slice axis of a 3-axis
   spec, so the box of a volume for a 2D slice model is taken over all slices and every slice
   keeps it. An image with no voxel above the threshold keeps its whole extent. `invert` puts
   model output back inside the box.
3. resample to `target_spacing` ("linear" or "cubic" for images, "nearest" for label maps),
   keeping the field of view of the (cropped) array: the grid is scaled about its centre;
4. centre crop or pad to `size` (padding with `pad_value`, air for CT);
5. `multiple_of`: centre pad each axis given up to the next multiple (the network's
   down-sampling factor), with `pad_value`;
6. `zscore`: `(x - mean) / std` per channel, the statistics taken on the source image after
   step 1 (over the voxels above `crop_foreground` when it is set), and applied last, so the
   padding is `pad_value` in source units, normalised like the rest. Undo it with
   `restore_intensity`.

`invert` undoes steps 2 to 5, returning an array on the source grid. A label map
(`order="nearest"`) skips the intensity steps 1 and 6, and with `crop_foreground` it must be given
its image's record so that both are cropped to the same box. `preprocessed_image` gives the
geometry (spacing, LPS origin) of the preprocessed grid.

A multi-channel image (`image.channels > 1`, e.g. RGB) is resampled and cropped on its spatial
axes only; its trailing channel axis passes through untouched, and its foreground is any channel
above the threshold. An axis whose spacing the reader assumed (`image.assumed_spacing_axes`, e.g.
a `.npy` without a sidecar) is never resampled to a target spacing: `preprocess` refuses, so 1.0 is
never taken for millimetres.

Versions: `PREPROCESSING_VERSION` is recorded in `spec.to_dict()` (so in bundle manifests).
Version 1 is steps 3 and 4 only; a dict without "version" is version 1, and version 2 with steps
1, 2, 5 and 6 off gives bit-identical output. `PreprocessSpec.from_dict` refuses a version this
code does not implement.

Example:
    >>> spec = PreprocessSpec(target_spacing=(None, 1.5, 1.5), size=(None, 240, 240))
    >>> x, record = preprocess(image, spec)          # x: (z, 240, 240) float32
    >>> y, _ = preprocess(mask, spec, order="nearest", record=record)
    >>> probs_src = invert(probs, record)            # probs_src: image.shape
"""

from __future__ import annotations

import dataclasses

import numpy as np

from serving.array_checks import finite_real_array
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.preprocess_spec import (
    PREPROCESSING_VERSION,
    PREPROCESSING_VERSIONS,
    PreprocessSpec,
    preprocessing_version,
)
from serving.preprocess_steps import (
    crop_or_pad,
    foreground_box,
    foreground_mask,
    intensity_stats,
    resample_array,
    zscore,
)

__all__ = [
    "PREPROCESSING_VERSION",
    "PREPROCESSING_VERSIONS",
    "PreprocessRecord",
    "PreprocessSpec",
    "invert",
    "plan",
    "preprocess",
    "preprocessed_image",
    "preprocessing_version",
    "resample_array",
    "restore_intensity",
]

@dataclasses.dataclass(frozen=True)
class PreprocessRecord:
    """What `preprocess` did to one image, enough to map model output back to the source grid."""

    source_shape: tuple[int, ...]
    source_spacing: tuple[float, ...]
    resampled_shape: tuple[int, ...]
    crop_start: tuple[int, ...]  # index in the resampled array of output index 0 (<0 = padding)
    output_shape: tuple[int, ...]
    box_start: tuple[int, ...] | None = None  # source index of the foreground box (None = 0)
    box_shape: tuple[int, ...] | None = None  # its length per axis (None = source_shape)
    intensity_mean: tuple[float, ...] | None = None  # z-score, one per channel
    intensity_std: tuple[float, ...] | None = None

    @property
    def cropped_shape(self) -> tuple[int, ...]:
        """The source shape inside the foreground box: what was resampled."""
        return self.source_shape if self.box_shape is None else self.box_shape

    @property
    def output_spacing(self) -> tuple[float, ...]:
        return tuple(
            s * n / m
            for s, n, m in zip(self.source_spacing, self.cropped_shape, self.resampled_shape)
        )


def plan(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    spec: PreprocessSpec,
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> PreprocessRecord:
    """The record `preprocess` would produce for an image of this shape and spacing.

    Args:
        shape: source spatial shape.
        spacing: source spacing (mm).
        spec: the spec.
        box: `(start, shape)` of the foreground box (it depends on the voxel values, so
            `preprocess` finds it); `None` = the whole image.
    """
    if len(shape) != len(spec.size):
        raise DataError(
            f"The preprocessing spec has {len(spec.size)} axes but the image has {len(shape)}. "
            f"Received: image shape={tuple(shape)}, spec size={spec.size}"
        )
    box_start, box_shape = box if box is not None else ((0,) * len(shape), tuple(shape))
    resampled = tuple(
        n if t is None else max(1, int(round(n * s / t)))
        for n, s, t in zip(box_shape, spacing, spec.target_spacing)
    )
    output = tuple(r if m is None else m for r, m in zip(resampled, spec.size))
    if spec.multiple_of is not None:
        output = tuple(o if k is None else -(-o // k) * k for o, k in zip(output, spec.multiple_of))
    start = tuple((r - m) // 2 for r, m in zip(resampled, output))
    return PreprocessRecord(
        source_shape=tuple(int(n) for n in shape),
        source_spacing=tuple(float(s) for s in spacing),
        resampled_shape=resampled,
        crop_start=start,
        output_shape=output,
        box_start=tuple(int(b) for b in box_start),
        box_shape=tuple(int(b) for b in box_shape),
    )


def _check_spacing_known(image: Image, spec: PreprocessSpec) -> None:
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


def preprocess(
    image: Image,
    spec: PreprocessSpec,
    order: str | None = None,
    record: PreprocessRecord | None = None,
) -> tuple[np.ndarray, PreprocessRecord]:
    """Clip, crop to the foreground, resample, crop/pad and normalise an image into model input.

    Args:
        image: source image; `image.array` shape `(z, y, x)` (or `(y, x)`), plus a trailing
            channel axis `C` when `image.channels > 1`.
        spec: the preprocessing spec (from the config or a bundle manifest), one entry per
            spatial axis.
        order: `None` (an image, interpolated with `spec.order`), "linear" or "cubic" for an
            image, "nearest" for a label map (no clip, no z-score, padded with 0).
        record: the record of the image this array lies on (preprocessed with the same
            spec), to reuse its foreground box and z-score statistics; needed by a label map
            when `spec.crop_foreground` is set.

    Returns:
        `(array, record)`: `array` has shape `record.output_shape` (plus `(C,)` for a
        multi-channel image; float32 for an image, the input dtype for a label map); `record`
        lets `invert` map model output back to `image`'s grid.

    Raises:
        DataError: if the image array is not real numbers (e.g. complex) or holds NaN or +-inf
            (counted in the message), its spatial rank does not match the spec, the spec
            resamples an axis whose spacing the reader only assumed, or `record` is for another
            grid.
        ConfigError: if a label map is cropped to the foreground without its image's `record`,
            or `record` lacks the z-score statistics the spec asks for.
    """
    label_map = order == "nearest"
    order = spec.order if order is None else order
    if record is None:
        plan(image.shape, image.spacing, spec)  # the rank check, before anything is computed
    elif record.source_shape != image.shape:
        raise DataError(
            "`record` must come from an image on the same grid as `image`. Received: "
            f"image shape={image.shape}, record source_shape={record.source_shape}"
        )
    _check_spacing_known(image, spec)
    if label_map and record is None and spec.crop_foreground is not None:
        raise ConfigError(
            "A label map (order='nearest') must be cropped to its image's foreground box: pass "
            "the image's `record` (`preprocess(mask, spec, order='nearest', record=record)`). "
            f"Received: record=None, crop_foreground={spec.crop_foreground}"
        )
    # Before resampling, which would smear one NaN over its neighbours.
    array = finite_real_array(image.array, "`image`")
    fill = 0 if label_map else spec.pad_value
    if spec.clip is not None and not label_map:
        array = np.clip(array, *spec.clip)
        fill = float(np.clip(fill, *spec.clip))  # so every output voxel lies in [low, high]
    if record is None:
        fg = None
        if spec.crop_foreground is not None:
            fg = foreground_mask(array, image.ndim, spec.crop_foreground)
        box = None if fg is None else foreground_box(fg, spec.foreground_margin)
        record = plan(image.shape, image.spacing, spec, box)
        if spec.zscore and not label_map:
            mean, std = intensity_stats(array, image.ndim, fg)
            record = dataclasses.replace(record, intensity_mean=mean, intensity_std=std)
    channels = array.shape[image.ndim :]  # () for grey, (C,) untouched by every step
    if record.cropped_shape != record.source_shape:
        array = array[tuple(slice(b, b + n) for b, n in zip(record.box_start, record.box_shape))]
    resampled = resample_array(array, record.resampled_shape + channels, order)
    out = crop_or_pad(
        resampled, record.crop_start + (0,) * len(channels), record.output_shape + channels, fill
    )
    if spec.zscore and not label_map:
        if record.intensity_mean is None:
            raise ConfigError(
                "`record` must come from preprocessing with the same spec: `spec.zscore` is set "
                "but the record holds no z-score statistics. Received: record.intensity_mean=None"
            )
        out = zscore(out, record.intensity_mean, record.intensity_std)
    return out, record


def invert(array: np.ndarray, record: PreprocessRecord, order: str = "linear", fill: float = 0.0):
    """Map an array on the preprocessed grid (e.g. probabilities) back to the source grid.

    Undoes the crop/pad, resampling and foreground crop; not the intensity steps (`clip` has no
    inverse, `restore_intensity` undoes the z-score).

    Args:
        array: shape `record.output_shape`, optionally with trailing channel axes.
        record: from `preprocess`.
        order: "linear" (or "cubic") for probabilities, "nearest" for labels.
        fill: value for source regions that were cropped away (0 = background), including
            everything outside the foreground box.

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
    flat = (int(np.prod(extra, dtype=int)),)
    back_start = tuple(-s for s in record.crop_start)
    uncropped = crop_or_pad(
        np.moveaxis(array.reshape(record.output_shape + (-1,)), -1, 0),
        (0,) + back_start,
        flat + record.resampled_shape,
        fill,
    )
    out = resample_array(uncropped, flat + record.cropped_shape, order)
    if record.cropped_shape != record.source_shape:
        out = crop_or_pad(out, (0,) + tuple(-b for b in record.box_start), flat + record.source_shape, fill)
    return np.moveaxis(out, 0, -1).reshape(record.source_shape + extra)


def restore_intensity(array: np.ndarray, record: PreprocessRecord) -> np.ndarray:
    """Undo the z-score of a preprocessed image: `array * std + mean` per channel (float32).

    Returns `array` as float32 unchanged when the spec had no z-score.
    """
    out = np.asarray(array, np.float32)
    if record.intensity_mean is None:
        return out
    return out * np.asarray(record.intensity_std, np.float32) + np.asarray(
        record.intensity_mean, np.float32
    )


def preprocessed_image(array: np.ndarray, image: Image, record: PreprocessRecord) -> Image:
    """`array` (a preprocessed image or label map) as an `Image` on the preprocessed grid.

    Output index `j` on an axis is source index `box_start + (j + crop_start + 0.5) * n / m - 0.5`
    (`n` the box length, `m` the resampled length), so the grid has spacing
    `record.output_spacing`, the source's direction, and its origin at the LPS position of that
    index for `j = 0`: every voxel keeps its physical position.

    Args:
        array: shape `record.output_shape` (plus `(C,)` for a multi-channel image).
        image: the source image `record` came from (geometry and metadata).
        record: from `preprocess`.

    Returns:
        An `Image` with `array` and the preprocessed geometry.
    """
    box_start = record.box_start or (0,) * len(record.source_shape)
    first = [
        b + (c + 0.5) * n / m - 0.5
        for b, c, n, m in zip(box_start, record.crop_start, record.cropped_shape, record.resampled_shape)
    ]
    origin = tuple(float(v) for v in image.index_to_physical(first))
    return image.with_array(array, spacing=record.output_spacing, origin=origin)
