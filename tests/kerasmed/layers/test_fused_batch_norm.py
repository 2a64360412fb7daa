"""FusedBatchNormalization trains like keras.layers.BatchNormalization and infers identically."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmed.layers import FusedBatchNormalization


def _pair(shape=(4, 8, 8, 6)):
    x = np.random.default_rng(0).normal(3.0, 2.0, shape).astype("float32")
    fused, plain = FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (fused, plain):
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]))
    return tf.constant(x), fused, plain


def test_training_output_gradients_and_moving_stats_match_keras():
    x, fused, plain = _pair()
    weights = tf.constant(np.random.default_rng(1).normal(size=x.shape).astype("float32"))
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)  # not degenerate: no gradient is zero by symmetry
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append((y.numpy(), [g.numpy() for g in grads],
                        layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    (yf, gf, mf, vf), (yp, gp, mp, vp) = results
    np.testing.assert_allclose(yf, yp, atol=1e-5)
    for a, b in zip(gf, gp):
        assert np.abs(b).max() > 0.1
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(mf, mp, rtol=1e-6)
    assert np.abs(mf).max() > 0.1  # the moving mean did move (0.1 x batch mean ~3)
    # The fused kernel's batch variance is unbiased: n / (n - 1) with n = 4 * 8 * 8 here.
    n = 4 * 8 * 8
    np.testing.assert_allclose(vf - 0.9, (vp - 0.9) * n / (n - 1), rtol=1e-4)


def test_inference_and_synchronized_calls_are_keras_own():
    x, fused, plain = _pair()
    np.testing.assert_array_equal(fused(x, training=False).numpy(), plain(x, training=False).numpy())
    assert fused._fusable(x, True, None) and not fused._fusable(x, False, None)
    fused.synchronized = True
    assert not fused._fusable(x, True, None)


def test_saved_model_round_trip_keeps_class_and_weights(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.get_layer("bn").moving_mean.assign([1.0, 2.0, 3.0])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_array_equal(loaded.get_layer("bn").moving_mean.numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("dtype", ["mixed_bfloat16"])
def test_mixed_precision_keeps_float32_statistics(dtype):
    layer = FusedBatchNormalization(dtype=dtype)
    x = tf.cast(tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2)), tf.bfloat16)
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    assert np.isfinite(layer.moving_variance.numpy()).all()
