import numpy as np

from kerasmed.evaluation.metrics import dice, threshold_baseline


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


def test_threshold_baseline_only_inside_lungs():
    ct = np.array([[-850.0, -300.0, 40.0], [40.0, -900.0, 40.0]])
    lungs = np.array([[1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(threshold_baseline(ct, lungs, -500.0), [[0, 1, 1], [0, 0, 0]])
