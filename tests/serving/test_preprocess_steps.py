"""serving.preprocess_steps: cubic resampling, the foreground box and z-score statistics, against
values worked out by hand."""

import numpy as np
import pytest

from serving.errors import ConfigError
from serving.preprocess_steps import (
    foreground_box,
    foreground_mask,
    intensity_stats,
    resample_array,
    zscore,
)
from tests.helpers import assert_allclose


def test_cubic_upsampling_by_two_matches_the_keys_weights_worked_by_hand():
    # Length 4 -> 8 samples input coordinates j/2 - 1/4, clamped to [0, 3]. At fraction 1/4 the
    # Keys (a = -0.5) weights of taps lo-1..lo+2 are (-9, 111, 29, -3)/128; at 3/4 reversed.
    # Taps beyond the array repeat the edge voxel.
    a = np.array([[0.0, 1.0, 8.0, 27.0]])
    expected = np.array([[
        0.0,  # coordinate clamped to 0
        (0 * -9 + 0 * 111 + 1 * 29 + 8 * -3) / 128,  # 0.25: taps (0, 0, 1, 8)
        (0 * -3 + 0 * 29 + 1 * 111 + 8 * -9) / 128,  # 0.75
        (0 * -9 + 1 * 111 + 8 * 29 + 27 * -3) / 128,  # 1.25
        (0 * -3 + 1 * 29 + 8 * 111 + 27 * -9) / 128,  # 1.75
        (1 * -9 + 8 * 111 + 27 * 29 + 27 * -3) / 128,  # 2.25: tap 4 repeats 27
        (1 * -3 + 8 * 29 + 27 * 111 + 27 * -9) / 128,  # 2.75
        27.0,  # clamped to 3
    ]])
    out = resample_array(a, (1, 8), order="cubic")
    assert out.dtype == np.float32
    assert_allclose(out, expected, atol=1e-5)


def test_cubic_is_exact_for_a_quadratic_away_from_the_edges():
    n, m = 20, 33
    source = (np.arange(n, dtype=np.float64) - 7.0) ** 2
    out = resample_array(source[None, :], (1, m), order="cubic")[0]
    coords = (np.arange(m) + 0.5) * n / m - 0.5
    interior = (coords >= 1) & (coords <= n - 3)  # all four taps inside the array
    assert interior.sum() >= 25  # not a vacuous check
    # float32 values up to ~150: a few ulps.
    assert_allclose(out[interior], (coords[interior] - 7.0) ** 2, atol=1e-4)


def test_cubic_keeps_a_constant_and_matches_linear_on_an_unchanged_axis():
    # Exactly: air stays -1024 HU, with no float32 rounding of the weights.
    np.testing.assert_array_equal(resample_array(np.full((3, 7, 9), -1024.0), (3, 12, 4), "cubic"), -1024.0)
    ramp = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(resample_array(ramp, (3, 4), "cubic"), ramp)


def test_unknown_order_lists_the_valid_ones():
    valid = r"one of \('linear', 'nearest', 'cubic'\)\. Received: order='spline'"
    with pytest.raises(ConfigError, match=valid):
        resample_array(np.zeros((2, 2)), (3, 3), order="spline")


def test_foreground_box_widens_by_the_margin_and_keeps_null_axes():
    mask = np.zeros((5, 10, 12), bool)
    mask[1, 3, 4] = mask[3, 6, 9] = True
    # y: rows 3..6 widened by 1 -> [2, 8); x: columns 4..9 widened by 2 -> [2, 12), the end
    # clamped to the array; z kept whole.
    assert foreground_box(mask, (None, 1, 2)) == ((0, 2, 2), (5, 6, 10))
    # z cropped too: slices 1..3, margin 5 clamped at both ends.
    assert foreground_box(mask, (5, 0, 0)) == ((0, 3, 4), (5, 4, 6))
    assert foreground_box(mask, (0, 0, 0)) == ((1, 3, 4), (3, 4, 6))


def test_foreground_box_of_an_empty_mask_is_the_whole_array():
    assert foreground_box(np.zeros((4, 6, 7), bool), (1, 1, 1)) == ((0, 0, 0), (4, 6, 7))


def test_foreground_mask_counts_a_voxel_above_the_threshold_in_any_channel():
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[0, 1, 2] = 0.9  # only the last channel
    rgb[1, 0, 0] = 0.5  # at the threshold: not above
    mask = foreground_mask(rgb, ndim=2, threshold=0.5)
    np.testing.assert_array_equal(mask, [[False, True, False], [False, False, False]])


def test_intensity_stats_over_all_voxels_over_a_mask_and_per_channel():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    mean, std = intensity_stats(a, ndim=2)
    assert mean == pytest.approx((2.5,)) and std == pytest.approx((1.25**0.5,))
    mask = np.array([[False, True], [True, True]])
    mean, std = intensity_stats(a, ndim=2, mask=mask)  # 2, 3, 4
    assert mean == pytest.approx((3.0,)) and std == pytest.approx(((2 / 3) ** 0.5,))
    # An empty mask falls back to every voxel.
    assert intensity_stats(a, 2, np.zeros((2, 2), bool)) == intensity_stats(a, 2)
    two = np.stack([a, 10 * a + 1], axis=-1)
    mean, std = intensity_stats(two, ndim=2)
    assert mean == pytest.approx((2.5, 26.0)) and std == pytest.approx((1.25**0.5, 10 * 1.25**0.5))


def test_a_constant_image_is_centred_not_divided_by_zero():
    mean, std = intensity_stats(np.full((3, 4), 7.0), ndim=2)
    assert mean == (7.0,) and std == (1.0,)
    out = zscore(np.full((3, 4), 7.0, np.float32), mean, std)
    np.testing.assert_array_equal(out, 0.0)
