import numpy as np

from kerasmed.evaluation.metrics import threshold_baseline


def test_threshold_baseline_only_inside_lungs():
    ct = np.array([[-850.0, -300.0, 40.0], [40.0, -900.0, 40.0]])
    lungs = np.array([[1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(threshold_baseline(ct, lungs, -500.0), [[0, 1, 1], [0, 0, 0]])
