"""Run a 2D slice model over a volume: preprocess, batch the slices, run, map back to the source.

The model contract (recorded in every bundle manifest): input `image` `(N, H, W, K)` float32 raw
intensities, where the K channels are K consecutive slices centred on the predicted one (K=1 is
plain 2D; K>1 is "2.5D", which lets a slice model tell a tube that runs through many slices, a
vessel, from a sphere, a nodule); output `probs` `(N, H, W, C)` float32 probabilities (C=1 sigmoid
foreground, C>1 softmax classes). K is read from the runner's input spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from serving.array_checks import as_real_array
from serving.errors import DataError
from serving.image import Image
from serving.preprocessing import PreprocessRecord, PreprocessSpec, invert, preprocess
from serving.runners.base_runner import Runner


def slice_stack(volume: np.ndarray, centres, context: int) -> np.ndarray:
    """Stacks of `context` consecutive slices around each centre, edge slices repeated.

    Args:
        volume: `(Z, H, W)` array.
        centres: slice indices, shape `(n,)`.
        context: odd number of slices per stack.

    Returns:
        `(n, H, W, context)` C-contiguous array of `volume`'s dtype (channels last, as the model
        takes them, and laid out as runtimes need them, so no runner copies it again).
    """
    if context < 1 or context % 2 == 0:
        raise DataError(f"`context` must be a positive odd number of slices. Received: {context}")
    volume = np.asarray(volume)
    offsets = np.arange(context) - context // 2
    index = np.clip(np.asarray(centres)[:, None] + offsets[None, :], 0, volume.shape[0] - 1)
    # One gathered slice per channel, written straight into the channels-last layout: half the
    # time of gathering (n, context, H, W) and transposing it into a contiguous copy.
    out = np.empty((len(index),) + volume.shape[1:] + (context,), dtype=volume.dtype)
    for k in range(context):
        out[..., k] = volume[index[:, k]]
    return out


def slice_batches(volume: np.ndarray, context: int, batch_size: int = 8) -> Iterator[np.ndarray]:
    """The model inputs for every axial slice of a volume, `batch_size` slices at a time.

    Args:
        volume: `(Z, H, W)` array, already preprocessed.
        context: slices per stack (`input_context(runner)`).
        batch_size: slices per batch; the last batch may be smaller.

    Yields:
        `(n, H, W, context)` C-contiguous float32 arrays, `n <= batch_size`, in slice order.

    Raises:
        DataError: if `volume` is not an array of real numbers (complex, string or object
            arrays are refused, not cast), not 3D, or `batch_size` is not positive. NaN and
            +-inf are left to the runner, which refuses every batch holding one.
    """
    volume = as_real_array(volume, "`volume`").astype(np.float32, copy=False)
    if volume.ndim != 3:
        raise DataError(f"`volume` must be (Z, H, W). Received: shape={volume.shape}")
    if int(batch_size) < 1:
        raise DataError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size}"
        )
    for start in range(0, volume.shape[0], int(batch_size)):
        centres = np.arange(start, min(start + int(batch_size), volume.shape[0]))
        yield slice_stack(volume, centres, context)


def input_context(runner: Runner) -> int:
    """Number of slices the runner's model takes per prediction (its input's channel count)."""
    channels = runner.input_specs[0].shape[-1]
    return int(channels) if channels else 1


def predict_batches(runner: Runner, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Run `runner` on each batch of model inputs and join the outputs along the batch axis.

    Args:
        runner: any Runner following the model contract.
        batches: `(n_i, H, W, K)` float32 arrays, e.g. from `slice_batches`. Parity builds them
            once per case and hands the same batches to every runner.

    Returns:
        `(sum n_i, H, W, C)` float32 probabilities.

    Raises:
        DataError: if there are no batches.
    """
    out = [np.asarray(runner.predict(batch), dtype=np.float32) for batch in batches]
    if not out:
        raise DataError("`batches` must hold at least one batch. Received: none")
    return out[0] if len(out) == 1 else np.concatenate(out, axis=0)


def predict_slices(runner: Runner, volume: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run `runner` on every axial slice of a preprocessed volume (with its neighbours for 2.5D).

    Args:
        runner: any Runner following the model contract.
        volume: `(Z, H, W)` float32, already preprocessed.
        batch_size: slices per call.

    Returns:
        `(Z, H, W, C)` float32 probabilities.

    Raises:
        DataError: if `volume` is not a 3D array of real numbers, or holds NaN or +-inf (the
            runner refuses the batch, naming its input and counting them).
    """
    volume = as_real_array(volume, "`volume`")
    if volume.ndim != 3:
        raise DataError(f"`volume` must be (Z, H, W). Received: shape={volume.shape}")
    return predict_batches(runner, slice_batches(volume, input_context(runner), batch_size))


def predict_image(
    runner: Runner, image: Image, spec: PreprocessSpec, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray, PreprocessRecord]:
    """Preprocess `image`, run every slice, and map the probabilities back to the source grid.

    Args:
        runner: any Runner following the model contract.
        image: the source image, array `(Z, H, W)` of raw intensities (HU for CT).
        spec: the preprocessing spec (from the config or the bundle manifest).
        batch_size: slices per runner call.

    Returns:
        `(probs_source, probs_preprocessed, record)`: `probs_source` is `image.shape + (C,)`,
        `probs_preprocessed` is `record.output_shape + (C,)`.

    Raises:
        DataError: if `image` is not grey (the model's channels are neighbouring slices, so an
            RGB image is refused), or `image.array` is not real numbers (e.g. complex) or holds
            NaN or +-inf, naming `image` and counting them; `preprocess` checks the source array
            before it resamples anything, and the runner checks every batch again.
    """
    image.require_grey("`predict_image`")
    volume, record = preprocess(image, spec)
    probs = predict_slices(runner, volume, batch_size)
    return invert(probs, record, order="linear", fill=0.0), probs, record


def probs_to_mask(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from `(..., C)` probabilities: `p >= threshold` for C=1, argmax for C>1 (uint8)."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= threshold).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)
