"""The intensity unit augmentation shifts in, and whether a HU window fits the data."""

import types
from pathlib import Path

import numpy as np
import pytest

from kerasmed.config import DEFAULT_INTENSITY_SHIFT, config_from_dict, load_config
from kerasmed.data.fingerprint import dataset_fingerprint
from kerasmed.data.intensity import (
    config_warnings,
    hu_window_fits,
    input_shift,
    intensity_unit,
    needs_fingerprint,
    window_misfit,
    window_statistics,
)
from serving.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
FINGERPRINT = {"num_cases": 3, "foreground_voxels": 500, "foreground_percentile_00_5": -900.0,
               "foreground_percentile_99_5": 300.0, "foreground_mean": -100.0,
               "foreground_std": 250.0, "image_std": 4000.0}


def _config(**sections):
    return config_from_dict({key: value for key, value in sections.items()})


@pytest.mark.parametrize("name", ["lung_nodule_seg_2d.yaml", "nodule_cls.yaml",
                                  "imagefolder_cls.yaml"])
def test_the_shipped_ct_configs_shift_by_exactly_20_hu(name):
    config = load_config(CONFIGS / name)
    assert config.augmentation.intensity_shift == DEFAULT_INTENSITY_SHIFT
    assert intensity_unit(config) == 1400.0  # the window's width, (-1000, 400) or (24, 1424)
    assert input_shift(config) == 20.0  # exactly: 20/1400 * 1400 is 20.0 in binary floating point
    assert not needs_fingerprint(config)


def test_unit_of_a_hu_window_is_its_width():
    config = _config(model={"hu_window": [-160.0, 240.0]})
    assert intensity_unit(config) == 400.0
    assert input_shift(config) == pytest.approx(400.0 * 20 / 1400)


def test_unit_of_z_scored_data_is_one_standard_deviation_whatever_the_model():
    for intensity in ("hu_window", "ct_fingerprint", "none"):
        config = _config(preprocessing={"zscore": True}, model={"intensity": intensity})
        assert intensity_unit(config) == 1.0  # no fingerprint needed
        assert input_shift(config) == pytest.approx(20 / 1400)
        assert not needs_fingerprint(config)


def test_unit_of_ct_fingerprint_is_the_foreground_std_ctnormalization_divides_by():
    config = _config(model={"intensity": "ct_fingerprint"})
    assert needs_fingerprint(config)
    assert intensity_unit(config, FINGERPRINT) == 250.0
    assert input_shift(config, fingerprint=FINGERPRINT) == pytest.approx(250.0 * 20 / 1400)
    with pytest.raises(ConfigError, match=r"ct_fingerprint.*Received: fingerprint=None"):
        intensity_unit(config)
    with pytest.raises(DataError, match="foreground"):
        intensity_unit(config, {**FINGERPRINT, "foreground_voxels": 0})


def test_unit_of_no_intensity_layer_is_the_training_images_std():
    config = _config(model={"intensity": "none"})
    assert intensity_unit(config, FINGERPRINT) == 4000.0
    with pytest.raises(DataError, match=r"image_std=0\.0 over 3 training cases"):
        intensity_unit(config, {**FINGERPRINT, "image_std": 0.0})


def test_input_shift_computes_the_runs_fingerprint_from_the_cases_only_when_needed():
    rng = np.random.default_rng(0)
    cases = [types.SimpleNamespace(case_id=f"c{i}", mask=None,
                                   image=rng.normal(30000, 2000, (1, 16, 16)).astype(np.float32))
             for i in range(3)]
    config = _config(model={"intensity": "none"}, seed=4)
    expected = dataset_fingerprint(cases, seed=4)["image_std"]  # what the run's fingerprint says
    assert 1900 < expected < 2100
    assert input_shift(config, cases) == pytest.approx(expected * 20 / 1400)
    # An absolute or zero shift needs no statistics: no case is read.
    unread = [types.SimpleNamespace(case_id="x", mask=None, image=None)]
    hu = _config(model={"intensity": "none"}, augmentation={"intensity_shift_hu": 7.5})
    assert input_shift(hu, unread) == 7.5
    assert input_shift(_config(model={"intensity": "none"},
                               augmentation={"intensity_shift": 0.0}), unread) == 0.0


def test_window_statistics_and_misfits():
    ct = np.concatenate([np.full(300, -1024.0), np.linspace(-900, 300, 700)])
    below, above, p1, p99 = window_statistics(ct, (-1000, 400))
    assert below == pytest.approx(0.3) and above == 0.0
    assert window_misfit((-1000, 400), below, above, p1, p99) is None
    microscopy = np.random.default_rng(0).normal(20000, 3000, 5000)  # 16-bit fluorescence
    message = window_misfit((-1000, 400), *window_statistics(microscopy, (-1000, 400)))
    assert message.startswith("100% of the voxels are clipped to its high end 400 by "
                              "model.hu_window [-1000, 400]")
    z = np.random.default_rng(0).normal(0, 1, 5000)  # z-scored: inside the window, squashed
    message = window_misfit((-1000, 400), *window_statistics(z, (-1000, 400)))
    assert "cover 0.3" in message and "of model.hu_window [-1000, 400]" in message
    assert window_misfit((-3, 3), *window_statistics(z, (-3, 3))) is None
    with pytest.raises(DataError, match="empty"):
        window_statistics(np.zeros(0), (0, 1))


def test_hu_window_fits_ct_and_shifted_ct_but_not_microscopy_or_z_scores():
    ct = np.random.default_rng(0).uniform(-1000, 300, (4, 8, 8))
    assert hu_window_fits(_config(), ct)
    assert hu_window_fits(_config(model={"hu_window": [24.0, 1424.0]}), ct + 1024)  # 16-bit PNG
    assert not hu_window_fits(_config(), ct + 21000)
    assert not hu_window_fits(_config(preprocessing={"zscore": True}), ct)
    assert not hu_window_fits(_config(model={"intensity": "none"}), ct)


def test_config_warnings_on_z_scores_under_a_hu_window():
    (warning,) = config_warnings(_config(preprocessing={"zscore": True}))
    assert warning.startswith("`preprocessing.zscore: true` with `model.intensity: hu_window`")
    assert "model.hu_window [-1000, 400]" in warning and "`model.intensity: none`" in warning
    assert config_warnings(_config()) == []
    assert config_warnings(_config(preprocessing={"zscore": True}, model={"intensity": "none"})) == []
    # A window in standard deviations is a deliberate choice.
    assert config_warnings(_config(preprocessing={"zscore": True},
                                   model={"hu_window": [-3.0, 3.0]})) == []
