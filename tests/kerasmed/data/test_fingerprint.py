"""The dataset fingerprint against numpy computed here, independently."""

import json

import numpy as np
import pytest

from kerasmed.data.cache import CachedCase
from kerasmed.data.fingerprint import INTENSITY_STATS, ct_normalization, dataset_fingerprint
from serving.errors import ConfigError, DataError
from tests.helpers import assert_allclose


def _case(case_id, shape, spacing, seed, foreground=True):
    rng = np.random.default_rng(seed)
    image = rng.normal(-600.0, 300.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    if foreground:
        mask[1:3, 2:9, 3:7] = 1
        image[mask > 0] = rng.normal(40.0, 25.0, int(mask.sum()))
    meta = {"source_shape": list(shape), "source_spacing": list(spacing),
            "output_shape": list(shape), "positive_slices": 2, "foreground_voxels": int(mask.sum())}
    return CachedCase(case_id, "train", image, mask, meta)


def _cases():
    return [_case("b", (4, 12, 10), (2.5, 0.7, 0.7), 1), _case("a", (3, 10, 10), (1.0, 0.8, 0.8), 2),
            _case("c", (5, 12, 12), (3.0, 0.9, 0.6), 3)]


def _numpy_stats(values):
    values = np.asarray(values, np.float64)
    return dict(zip(INTENSITY_STATS, (values.mean(), values.std(), np.median(values),
                                       np.percentile(values, 0.5), np.percentile(values, 99.5),
                                       values.min(), values.max()), strict=True))


def test_every_voxel_when_cases_are_smaller_than_the_sample():
    cases = _cases()
    fp = dataset_fingerprint(cases, samples_per_case=10000)
    fg = np.concatenate([c.image[c.mask > 0] for c in cases])
    whole = np.concatenate([c.image.ravel() for c in cases])
    assert fp["num_cases"] == 3 and fp["seed"] == 0 and fp["samples_per_case"] == 10000
    assert fp["foreground_voxels"] == fp["foreground_samples"] == 3 * 56 == fg.size
    assert fp["image_voxels"] == fp["image_samples"] == 480 + 300 + 720 == whole.size
    for prefix, values in (("foreground", fg), ("image", whole)):
        for key, expected in _numpy_stats(values).items():
            # float64 sums of float32 values: only the order of summation differs from numpy.
            assert_allclose(fp[f"{prefix}_{key}"], expected, atol=1e-9, rtol=1e-12, err_msg=key)
    assert fp["spacing_median"] == [2.5, 0.8, 0.7]
    assert fp["spacing_min"] == [1.0, 0.7, 0.6] and fp["spacing_max"] == [3.0, 0.9, 0.8]
    assert fp["shape_median"] == [4, 12, 10] and fp["shape_min"] == [3, 10, 10]
    assert fp["shape_max"] == [5, 12, 12]
    assert json.loads(json.dumps(fp, allow_nan=False)) == fp  # JSON-safe, round-trips exactly


def test_sample_is_seeded_bounded_and_drawn_from_the_foreground():
    cases = _cases()
    fp = dataset_fingerprint(cases, seed=3, samples_per_case=20)
    assert fp["foreground_samples"] == 60 and fp["foreground_voxels"] == 168
    assert fp["image_samples"] == 60 and fp["image_voxels"] == 1500
    assert dataset_fingerprint(cases, seed=3, samples_per_case=20) == fp
    # Neither the order of the cases nor the case list object changes a number.
    assert dataset_fingerprint(cases[::-1], seed=3, samples_per_case=20) == fp
    other = dataset_fingerprint(cases, seed=4, samples_per_case=20)
    assert other["foreground_mean"] != fp["foreground_mean"]
    fg = np.concatenate([c.image[c.mask > 0] for c in cases]).astype(np.float64)
    # Sampled without replacement from the foreground (about 40 +- 25 HU; the rest is ~ -600).
    assert fg.min() <= fp["foreground_min"] and fp["foreground_max"] <= fg.max()
    assert abs(fp["foreground_mean"] - fg.mean()) < 15.0
    assert abs(fp["foreground_std"] - fg.std()) < 10.0


def test_no_foreground_is_recorded_and_refused_by_ct_normalisation_only():
    cases = [_case(name, (3, 8, 8), (1.0, 1.0, 1.0), i, foreground=False)
             for i, name in enumerate("xy")]
    fp = dataset_fingerprint(cases)
    assert fp["foreground_voxels"] == 0 and "foreground_mean" not in fp
    assert fp["image_voxels"] == 2 * 3 * 8 * 8
    with pytest.raises(DataError, match=r"CT normalisation needs labelled foreground.*"
                       r"Received: 0 foreground voxels in 2 training cases$"):
        ct_normalization(fp)


def test_a_cache_without_meta_gives_no_geometry():
    cases = [CachedCase(c.case_id, c.split, c.image, c.mask, {}) for c in _cases()]
    fp = dataset_fingerprint(cases)
    assert not [k for k in fp if k.startswith(("spacing", "shape"))]
    assert fp["foreground_mean"] == dataset_fingerprint(_cases())["foreground_mean"]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_samples_per_case_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match=rf"`samples_per_case` must be an integer >= 1\. "
                       rf"Received: samples_per_case={bad!r}$"):
        dataset_fingerprint(_cases(), samples_per_case=bad)


def test_ct_normalization_takes_the_foreground_window_and_z_score():
    fp = dataset_fingerprint(_cases())
    assert ct_normalization(fp) == {
        "low": fp["foreground_percentile_00_5"], "high": fp["foreground_percentile_99_5"],
        "mean": fp["foreground_mean"], "std": fp["foreground_std"],
    }
    with pytest.raises(DataError, match=r"`foreground_std` > 0.*Received: foreground_std=0\.0$"):
        ct_normalization({**fp, "foreground_std": 0.0})
    with pytest.raises(DataError, match=r"needs the fingerprint's .*foreground_mean.*Received: "):
        ct_normalization({k: v for k, v in fp.items() if k != "foreground_mean"})
