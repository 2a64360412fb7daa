import numpy as np
import pytest

from serving.metrics import dice, mean_dice


def test_dice_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 voxels
    b[1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == 0.5
    assert dice(a, a) == 1.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert dice(np.zeros(3), np.zeros(3), empty=0.0) == 0.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(a.astype(np.uint8) * 7, b) == 0.5  # any non-zero label is foreground


def test_mean_dice_scores_only_the_classes_present():
    a = np.array([[1, 1, 2, 0], [0, 0, 2, 0]])
    b = np.array([[1, 0, 2, 2], [0, 0, 0, 0]])
    # class 1: 2*1/(2+1); class 2: 2*1/(2+2); class 3 is in neither map and is left out.
    assert mean_dice(a, b, [1, 2, 3]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert mean_dice(a, b, [3]) == 1.0 and np.isnan(mean_dice(a, b, [3], empty=np.nan))
    assert mean_dice(a, a, range(1, 3)) == 1.0
