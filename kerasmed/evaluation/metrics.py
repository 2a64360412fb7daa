"""Numpy segmentation metrics on label maps."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two binary masks; `empty` when both are empty."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def threshold_baseline(ct_hu: np.ndarray, lung_mask: np.ndarray, threshold_hu: float = -500.0):
    """The classic non-learned baseline: every lung voxel denser than `threshold_hu` is 'nodule'."""
    return ((np.asarray(ct_hu) > threshold_hu) & (np.asarray(lung_mask) > 0)).astype(np.uint8)
