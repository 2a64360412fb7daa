import keras
import numpy as np
import pytest

from kerasmed.layers.hu_window import HUWindow
from tests.helpers import assert_allclose


def test_window_clips_and_scales():
    layer = HUWindow(-1000.0, 400.0)
    x = np.array([[-2000.0, -1000.0, -300.0, 400.0, 3000.0]], np.float32)
    assert_allclose(np.asarray(layer(x)), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)


def test_config_round_trip():
    layer = HUWindow(-160.0, 240.0, name="soft_tissue")
    clone = HUWindow.from_config(layer.get_config())
    assert (clone.low, clone.high, clone.name) == (-160.0, 240.0, "soft_tissue")


def test_save_load_round_trip_gives_same_outputs(tmp_path):
    inputs = keras.Input((None, None, 1), name="image")
    outputs = keras.layers.Conv2D(2, 3, padding="same")(HUWindow(-1000.0, 400.0)(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).uniform(-1200, 600, (2, 16, 16, 1)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[1], HUWindow)
    assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_empty_window_is_rejected():
    with pytest.raises(ValueError, match="high"):
        HUWindow(100.0, 100.0)
