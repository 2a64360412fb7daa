"""Run a 2D slice model over a volume: preprocess, batch the slices, run, map back to the source.

The model contract (recorded in every bundle manifest): input `image` `(N, H, W, 1)` float32 raw
intensities; output `probs` `(N, H, W, C)` float32 probabilities (C=1 sigmoid foreground, C>1
softmax classes).
"""

from __future__ import annotations

import numpy as np

from serving.errors import DataError
from serving.image import Image
from serving.preprocessing import PreprocessRecord, PreprocessSpec, invert, preprocess
from serving.runners.base_runner import Runner


def predict_slices(runner: Runner, volume: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run `runner` on every axial slice of a preprocessed volume.

    Args:
        runner: any Runner following the model contract.
        volume: `(Z, H, W)` float32, already preprocessed.
        batch_size: slices per call.

    Returns:
        `(Z, H, W, C)` float32 probabilities.
    """
    if volume.ndim != 3:
        raise DataError(f"`volume` must be (Z, H, W). Received: shape={volume.shape}")
    out = []
    for start in range(0, volume.shape[0], batch_size):
        batch = volume[start : start + batch_size, ..., None].astype(np.float32, copy=False)
        out.append(np.asarray(runner.predict(batch), dtype=np.float32))
    return np.concatenate(out, axis=0)


def predict_image(
    runner: Runner, image: Image, spec: PreprocessSpec, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray, PreprocessRecord]:
    """Preprocess `image`, run every slice, and map the probabilities back to the source grid.

    Returns:
        `(probs_source, probs_preprocessed, record)`: `probs_source` is `image.shape + (C,)`,
        `probs_preprocessed` is `record.output_shape + (C,)`.
    """
    volume, record = preprocess(image, spec)
    probs = predict_slices(runner, volume, batch_size)
    return invert(probs, record, order="linear", fill=0.0), probs, record


def probs_to_mask(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from `(..., C)` probabilities: `p >= threshold` for C=1, argmax for C>1 (uint8)."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] >= threshold).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)
