"""kerasmed.models.classifiers: the plain CNN and the residual CNN, 2D and 3D."""

import keras
import numpy as np
import pytest
from scipy.special import expit, softmax

from export.exporters.registry import get_exporter
from kerasmed.models.classifiers import PortableMaxPooling3D, cnn, resnet
from kerasmed.models.float32 import as_float32
from kerasmed.models.registry import MODELS, build_model
from serving.errors import ConfigError
from serving.runners import make_runner
from tests.helpers import assert_allclose, train_briefly, varied_hu

SHAPES = {2: (None, None, 1), 3: (None, None, None, 1)}


def tiny(builder, spatial_dims=2, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    args = {"input_shape": SHAPES[spatial_dims], "spatial_dims": spatial_dims, "filters": 4,
            "depth": 2, **kwargs}
    return builder(**args)


def hu(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1100, 500, shape).astype(np.float32)


def logits_of(model, x):
    return np.asarray(keras.Model(model.input, model.get_layer("logits").output)(x, training=False))


@pytest.mark.parametrize("builder", [cnn, resnet])
@pytest.mark.parametrize("spatial_dims,num_classes,activation,expected", [
    (2, 1, None, "sigmoid"),
    (2, 4, None, "softmax"),
    (2, 3, "sigmoid", "sigmoid"),  # multi-label
    (3, 1, None, "sigmoid"),
    (3, 3, None, "softmax"),
])
def test_output_shape_and_activation(builder, spatial_dims, num_classes, activation, expected):
    model = tiny(builder, spatial_dims, num_classes=num_classes, activation=activation)
    x = hu((3, 16, 20, 1) if spatial_dims == 2 else (3, 8, 16, 12, 1))
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, num_classes) and probs.dtype == np.float32
    assert model.input.name == "image" and model.layers[1].name == "hu_window"
    assert model.get_layer("probs").activation.__name__ == expected
    assert model.get_layer("logits").output.shape == (None, num_classes)
    # probs is exactly the activation of the logits (temperature scaling divides the latter).
    z = logits_of(model, x).astype(np.float64)
    assert_allclose(probs, expit(z) if expected == "sigmoid" else softmax(z, axis=-1), atol=1e-6)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    if expected == "softmax":
        assert_allclose(probs.sum(-1), np.ones(3), atol=1e-6)


@pytest.mark.parametrize("normalization", ["batch", "group", "none"])
def test_normalisations_and_intensities_build(normalization):
    ct = {"low": -1000.0, "high": 300.0, "mean": -400.0, "std": 300.0}
    for builder in (cnn, resnet):
        model = tiny(builder, normalization=normalization, intensity="ct_fingerprint",
                     ct_normalization=ct, dropout=0.3)
        assert model.layers[1].name == "ct_normalization"
        assert model.get_layer("head_dropout").rate == 0.3
        assert model.output_shape == (None, 1)
    assert tiny(cnn, intensity="none").layers[1].name == "block0_conv"


def test_resnet_stages_downsample_and_double_filters():
    model = tiny(resnet, 3, depth=3)
    x = hu((1, 16, 16, 16, 1))
    features = keras.Model(model.input, [model.get_layer(f"stage{s}_block1_add").output
                                         for s in range(3)])(x)
    assert [tuple(f.shape) for f in features] == [(1, 16, 16, 16, 4), (1, 8, 8, 8, 8),
                                                  (1, 4, 4, 4, 16)]
    assert isinstance(model.get_layer("stage1_block0_shortcut"), keras.layers.Conv3D)
    with pytest.raises(ValueError):  # identity shortcut: no projection where nothing changes
        model.get_layer("stage0_block0_shortcut")


def test_registry_finds_the_classifiers_by_name():
    assert MODELS.lookup("cnn") is cnn and MODELS.lookup("resnet") is resnet
    model = build_model("resnet", input_shape=(None, None, None, 1), spatial_dims=3, filters=4,
                        depth=1, num_classes=2)
    assert model.output_shape == (None, 2) and model.name == "resnet"
    with pytest.raises(ConfigError, match=r"valid names: \[.*'cnn'.*'resnet'.*'transfer'.*'unet2d'"):
        build_model("densenet")


@pytest.mark.parametrize("kwargs,match", [
    ({"spatial_dims": 1}, r"spatial_dims` must be one of \(2, 3\)\. Received: spatial_dims=1"),
    ({"input_shape": (None, None, 1), "spatial_dims": 3}, r"\(D, H, W, C\).*Received: input_shape"),
    ({"num_classes": 1, "activation": "softmax"}, r"num_classes` >= 2.*Received: num_classes=1"),
    ({"activation": "relu"}, r"one of \('sigmoid', 'softmax'\)\. Received: activation='relu'"),
    ({"dropout": 1.0}, r"dropout` must be in \[0, 1\)\. Received: dropout=1.0"),
    ({"normalization": "layer"}, r"normalization` must be one of"),
    ({"depth": 0}, r"must be positive"),
    ({"intensity": "ct_fingerprint"}, r"needs `ct_normalization`"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    for builder in (cnn, resnet):
        with pytest.raises(ConfigError, match=match):
            builder(**kwargs)


@pytest.mark.parametrize("builder,spatial_dims", [(cnn, 2), (resnet, 3)])
def test_fit_on_a_tiny_batch_lowers_the_loss(builder, spatial_dims):
    model = tiny(builder, spatial_dims, num_classes=3, seed=1)
    shape = (8, 32, 32, 1) if spatial_dims == 2 else (8, 12, 12, 12, 1)
    x = hu(shape, seed=1)
    y = np.random.default_rng(2).integers(0, 3, 8)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    losses = model.fit(x, y, batch_size=8, epochs=25, verbose=0, shuffle=False).history["loss"]
    assert np.isfinite(losses).all()
    # Eight random labels are being memorised: the training loss falls by a quarter at least, and
    # below chance (ln 3 = 1.10).
    assert losses[-1] < 0.75 * losses[0] and losses[-1] < np.log(3), losses


SLOW = pytest.mark.slow


@pytest.mark.parametrize("fmt,builder,spatial_dims,num_classes", [
    ("onnx", cnn, 2, 3), ("onnx", cnn, 3, 1), ("onnx", resnet, 2, 1), ("onnx", resnet, 3, 3),
    # TFLite lacks some 3D ops (MaxPool3D): the 3D models run in the default suite.
    ("tflite", cnn, 3, 1), ("tflite", resnet, 3, 3),
    pytest.param("tflite", cnn, 2, 3, marks=SLOW), pytest.param("tflite", resnet, 2, 1, marks=SLOW),
])
def test_exported_model_matches_keras(fmt, builder, spatial_dims, num_classes, tmp_path):
    model = tiny(builder, spatial_dims, num_classes=num_classes, normalization="group")
    shapes = ([(4, 32, 32, 1), (2, 20, 28, 1)] if spatial_dims == 2
              else [(4, 16, 16, 16, 1), (1, 12, 10, 14, 1)])
    train_briefly(model, varied_hu(shapes[0]))
    entry = get_exporter(fmt).export(model, tmp_path)
    runner = make_runner(fmt, tmp_path / entry["file"])
    # The second size is not a multiple of 2**depth: batch and spatial sizes are dynamic.
    for i, shape in enumerate(shapes):
        x = varied_hu(shape, seed=i)
        expected = np.asarray(model(x, training=False))
        if i == 0:
            assert expected.std() > 0.1  # spread, so that the tolerance means something
        assert_allclose(runner.predict(x), expected, atol=1e-4)  # the fp32 artefact tolerance


def test_portable_max_pooling_3d_equals_max_pooling_3d(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 6, 3)).astype(np.float32)  # odd sizes
    expected = np.asarray(keras.layers.MaxPooling3D(2)(x))
    layer = PortableMaxPooling3D(name="pool")
    np.testing.assert_array_equal(np.asarray(layer(x)), expected)
    assert expected.shape == (2, 2, 3, 3, 3)
    assert layer.compute_output_shape((None, 5, None, 6, 3)) == (None, 2, None, 3, 3)
    clone = PortableMaxPooling3D.from_config(layer.get_config())
    assert clone.name == "pool"
    inputs = keras.Input((None, None, None, 3))
    model = keras.Model(inputs, PortableMaxPooling3D()(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[1], PortableMaxPooling3D)
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected)


@pytest.mark.parametrize("builder,spatial_dims", [(cnn, 3), (resnet, 2)])
def test_mixed_precision_keeps_float32_ends_and_rebuilds_in_float32(builder, spatial_dims):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny(builder, spatial_dims, num_classes=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("hu_window").compute_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "bfloat16"
    x = hu((2, 16, 16, 1) if spatial_dims == 2 else (2, 8, 8, 8, 1))
    assert model(x, training=False).dtype == "float32"
    rebuilt = as_float32(model)
    assert {layer.dtype_policy.name for layer in rebuilt.layers} == {"float32"}
    # bfloat16 keeps 8 mantissa bits: the bf16 model differs from its float32 rebuild by ~1e-2.
    assert_allclose(model(x, training=False), rebuilt(x, training=False), atol=5e-2)
