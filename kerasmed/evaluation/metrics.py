"""The segmentation evaluation's non-learned baseline. Metrics (Dice...) live in `serving.metrics`."""

from __future__ import annotations

import numpy as np


def threshold_baseline(ct_hu: np.ndarray, lung_mask: np.ndarray, threshold_hu: float = -500.0):
    """The classic non-learned baseline: every lung voxel denser than `threshold_hu` is 'nodule'."""
    return ((np.asarray(ct_hu) > threshold_hu) & (np.asarray(lung_mask) > 0)).astype(np.uint8)
