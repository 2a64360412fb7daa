"""The classifier's histogram baseline follows the modality: HU histograms over the model's window
on CT, intensity histograms over the training images' percentiles otherwise."""

from pathlib import Path

import numpy as np
import pytest

from kerasmed.config import config_from_dict, load_config
from kerasmed.evaluation.histogram_baseline import HistogramBaseline
from kerasmed.tasks.classification_eval import histogram_baseline_auc, histogram_range
from serving.metrics import roc_auc

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
HU = "logistic regression on HU histograms"


def _config(**sections):
    raw = {"task": "classification", "data": {"columns": {"mask": None, "label": "label"}},
           "preprocessing": {"target_spacing": [None, None, None], "size": [None, 8, 8]},
           "model": {"name": "cnn", "context_slices": 1, "class_names": ["neg", "pos"]}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return config_from_dict(raw)


def _separable_16_bit(n=120, seed=0):
    """16-bit microscopy-like images whose classes differ in brightness (1000 of 65535)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)[:, None]
    x = rng.normal(20000, 800, (n, 8, 8, 1)) + 1000 * y[:, :, None, None]
    return x.astype(np.float32), y


def test_on_16_bit_data_the_baseline_bins_the_images_own_range_and_separates_the_classes():
    x, y = _separable_16_bit()
    train, val = slice(0, 80), slice(80, None)
    # The HU window clips every pixel into its top bin: a baseline at chance.
    old = HistogramBaseline(intensity_range=(-1000.0, 400.0)).fit(x[train], y[train, 0])
    assert roc_auc(y[val, 0], old.predict_proba(x[val])[:, 1]) == pytest.approx(0.5)
    for config in (_config(), _config(model={"intensity": "none"})):
        (low, high), name = histogram_range(config, x[train])
        assert 17000 < low < 19500 and 21500 < high < 24000
        assert name.startswith("logistic regression on intensity histograms over [")
        assert "0.5-99.5 percentiles" in name
        auc, what = histogram_baseline_auc(config, x[train], y[train], x[val], y[val])
        assert auc > 0.95 and what == name


def test_on_z_scored_data_the_baseline_is_not_called_hu():
    x, y = _separable_16_bit()
    z = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / x.std(axis=(1, 2, 3), keepdims=True)
    (low, high), name = histogram_range(_config(preprocessing={"zscore": True}), z)
    assert -4 < low < -1.5 and 1.5 < high < 4
    assert "intensity histograms" in name and "HU" not in name


@pytest.mark.parametrize("config, offset", [("nodule_cls.yaml", 0.0),
                                            ("imagefolder_cls.yaml", 1024.0)])
def test_the_ct_flagship_baseline_keeps_its_hu_window(config, offset):
    """CT patches (HU, or HU + 1024 in the 16-bit PNGs): the baseline is unchanged."""
    config = load_config(CONFIGS / config)
    rng = np.random.default_rng(0)
    lung = rng.normal(-850, 60, (40, 16, 16, 1))
    lung[1::2, 6:10, 6:10] = rng.normal(30, 20, (20, 4, 4, 1))  # soft-tissue blobs
    lung = lung + offset
    assert histogram_range(config, lung) == (tuple(config.model.hu_window), HU)
    y = (np.arange(40) % 2).astype(np.float32)[:, None]
    auc, what = histogram_baseline_auc(config, lung, y, lung, y)
    assert what == HU and auc > 0.9
