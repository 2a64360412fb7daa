"""kerasmed.models.float32.as_float32: a mixed-precision model rebuilt in float32."""

import keras
import numpy as np
import pytest

from export.exporters.registry import get_exporter
from kerasmed.models.float32 import as_float32, is_float32
from serving.runners import make_runner
from tests.helpers import assert_allclose, tiny_unet


@pytest.fixture
def bf16_model():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_unet(seed=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    yield model
    keras.mixed_precision.set_global_policy("float32")


def test_float32_model_is_returned_as_is():
    model = tiny_unet()
    assert is_float32(model)
    assert as_float32(model) is model


def test_bf16_model_is_rebuilt_in_float32(bf16_model, tmp_path):
    assert not is_float32(bf16_model)
    converted = as_float32(bf16_model)
    assert converted is not bf16_model and is_float32(converted)
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in converted.weights)
    assert {layer.dtype_policy.name for layer in converted.layers} == {"float32"}
    for a, b in zip(converted.get_weights(), bf16_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b, np.float32))
    assert keras.config.dtype_policy().name == "float32"  # the caller's policy is restored

    x = np.random.default_rng(0).uniform(-1100, 500, (2, 32, 32, 1)).astype(np.float32)
    expected = np.asarray(converted(x, training=False))
    # bfloat16 keeps 8 mantissa bits: the bf16 model differs from its float32 rebuild by ~1e-2.
    assert_allclose(bf16_model(x, training=False), expected, atol=5e-2)

    entry = get_exporter("onnx").export(converted, tmp_path)
    runner = make_runner("onnx", tmp_path / entry["file"])
    assert_allclose(runner.predict(x), expected)


def test_caller_policy_is_kept(bf16_model):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        as_float32(bf16_model)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_intensity_layer_computes_in_float32_under_mixed_precision(bf16_model):
    # Raw HU in bfloat16 are 4-8 HU apart near -1000: the window must see them in float32.
    window = bf16_model.get_layer("hu_window")
    assert window.compute_dtype == "float32"
    assert bf16_model.get_layer(index=2).compute_dtype == "bfloat16"  # the first convolution
    x = np.array([-1000.0, -999.0, -998.0, -997.0], np.float32).reshape(1, 1, 4, 1)
    y = np.asarray(window(x)).ravel()
    assert len(set(y.tolist())) == 4  # in bfloat16 these four HU would be at most two values
    assert len(set(np.asarray(keras.ops.cast(x, "bfloat16"), np.float32).ravel().tolist())) <= 2
