"""The segmentation evaluation's non-learned baseline, and the check that a model's predictions
are numbers at all. Metrics (Dice...) live in `serving.metrics`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.errors import DataError


def threshold_baseline(ct_hu: np.ndarray, lung_mask: np.ndarray, threshold_hu: float = -500.0):
    """The classic non-learned baseline: every lung voxel denser than `threshold_hu` is 'nodule'."""
    return ((np.asarray(ct_hu) > threshold_hu) & (np.asarray(lung_mask) > 0)).astype(np.uint8)


def require_finite_predictions(probs: np.ndarray, case_id, model: str | Path) -> None:
    """Refuse NaN or infinite predictions, which every metric would score as a plain miss (a
    Dice or an AUC of 0.000) instead of saying that the model computes no numbers.

    Raises:
        DataError: naming the case, the count and the model file.
    """
    probs = np.asarray(probs)
    bad = int(probs.size - np.count_nonzero(np.isfinite(probs)))
    if bad:
        raise DataError(
            f"The run's model must predict finite probabilities; it predicts NaN or inf on case "
            f"{case_id} (e.g. an overflow inside a model whose training diverged: train it again "
            f"with a lower `training.learning_rate`), so no metric of it means anything. "
            f"Received: {bad} of {probs.size} predictions NaN or inf from {model}"
        )
