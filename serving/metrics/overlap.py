"""Overlap of masks: Dice of two binary masks, and mean Dice over the classes of two label maps.

Dice of two masks is `2 |A ∩ B| / (|A| + |B|)`. Two empty masks agree perfectly, so their Dice is
`empty` (1.0 by default): an empty prediction on a case without a finding is right.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two binary masks (any non-zero value is foreground).

    Args:
        pred, truth: arrays of one shape, e.g. `(Z, H, W)` masks.
        empty: the value when both masks are empty.

    Returns:
        Dice in [0, 1].
    """
    a, b = np.asarray(pred) != 0, np.asarray(truth) != 0
    # count_nonzero counts a boolean array several times faster than sum().
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float(empty)
    return 2.0 * int(np.count_nonzero(a & b)) / total


def mean_dice(labels_a: np.ndarray, labels_b: np.ndarray, classes: Iterable[int],
              empty: float = 1.0) -> float:
    """Mean Dice over the `classes` present in either label map (classes absent from both are
    left out, not counted as perfect).

    Args:
        labels_a, labels_b: integer label maps of one shape, e.g. `(Z, H, W)`.
        classes: the label values to score, e.g. `[1]` or `range(1, C)`.
        empty: the value when no class is present in either map.

    Returns:
        Mean Dice in [0, 1].
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    scores = [dice(a == c, b == c, empty=np.nan) for c in classes]
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else float(empty)
