"""CTNormalization: values against numpy, config and save/load round trips, ONNX through
onnxruntime, and the U-Net built with it."""

import keras
import numpy as np
import pytest

from export.exporters.registry import get_exporter
from kerasmed.layers.ct_normalization import CTNormalization
from kerasmed.models.unet import unet2d
from serving.errors import ConfigError
from serving.runners import make_runner
from tests.helpers import assert_allclose, tiny_unet

STATS = {"low": -1020.5, "high": 310.25, "mean": -412.0, "std": 287.5}


def _inputs(seed=0, shape=(2, 16, 16, 1)):
    return np.random.default_rng(seed).uniform(-2000.0, 2000.0, shape).astype(np.float32)


def _model():
    inputs = keras.Input((None, None, 1), name="image")
    x = CTNormalization(**STATS, name="ct_normalization")(inputs)
    outputs = keras.layers.Conv2D(2, 3, padding="same", name="conv")(x)
    keras.utils.set_random_seed(0)
    return keras.Model(inputs, outputs)


def test_clips_then_z_scores_like_numpy():
    x = np.array([[-3000.0, -1020.5, -412.0, 0.0, 310.25, 5000.0]], np.float32)
    y = np.asarray(CTNormalization(**STATS)(x))
    expected = (np.clip(x.astype(np.float64), -1020.5, 310.25) + 412.0) / 287.5
    assert_allclose(y, expected, atol=1e-6)
    assert_allclose(y[0, [0, 2, 5]], [-608.5 / 287.5, 0.0, 722.25 / 287.5], atol=1e-6)


def test_config_round_trip():
    layer = CTNormalization(**STATS, name="ct")
    clone = CTNormalization.from_config(layer.get_config())
    assert (clone.low, clone.high, clone.mean, clone.std, clone.name) == (*STATS.values(), "ct")


def test_save_load_round_trip_gives_same_outputs(tmp_path):
    model, x = _model(), _inputs()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.get_layer("ct_normalization")
    assert isinstance(layer, CTNormalization)
    assert (layer.low, layer.high, layer.mean, layer.std) == tuple(STATS.values())
    assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_onnx_artefact_runs_like_keras(tmp_path):
    model = _model()
    entry = get_exporter("onnx").export(model, tmp_path)
    runner = make_runner("onnx", tmp_path / entry["file"])
    for x in (_inputs(1), _inputs(2, (1, 24, 8, 1))):
        assert_allclose(runner.run({"image": x})[model.output_names[0]], model(x, training=False))


@pytest.mark.parametrize("bad,match", [
    ({"std": 0.0}, r"`std` must be > 0 to z-score\. Received: std=0\.0"),
    ({"std": -1.0}, r"`std` must be > 0 to z-score\. Received: std=-1\.0"),
    ({"low": 400.0}, r"`high` must be >= `low`\. Received: low=400\.0, high=310\.25"),
    ({"mean": float("nan")}, r"must be finite\. Received: .*mean=nan"),
])
def test_bad_arguments_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        CTNormalization(**{**STATS, **bad})


def test_unet_first_layer_follows_intensity():
    ct = tiny_unet(intensity="ct_fingerprint", ct_normalization=STATS)
    layer = ct.layers[1]
    assert isinstance(layer, CTNormalization) and layer.name == "ct_normalization"
    assert (layer.low, layer.high, layer.mean, layer.std) == tuple(STATS.values())
    raw = tiny_unet(intensity="none")
    assert raw.layers[1].name == "down0_conv1"  # raw intensities reach the first convolution
    with pytest.raises(ConfigError, match=r"`intensity` must be one of \('hu_window', "
                       r"'ct_fingerprint', 'none'\)\. Received: intensity='zscore'"):
        unet2d(intensity="zscore")
    with pytest.raises(ConfigError, match=r"needs `ct_normalization`.*Received: ct_normalization=None"):
        unet2d(intensity="ct_fingerprint")
