"""kerasmed.models.transfer: keras.applications backbones, local weights, the two-phase schedule."""

import re

import keras
import numpy as np
import pytest

from export.exporters.registry import get_exporter
from kerasmed.models.float32 import as_float32
from kerasmed.models.registry import MODELS, build_model
from kerasmed.models.transfer import (
    BACKBONES,
    InferenceModeModel,
    backbone_blocks,
    freeze_backbone,
    transfer,
    unfreeze_top_blocks,
)
from serving.errors import ConfigError
from serving.runners import make_runner
from tests.helpers import assert_allclose, train_briefly, varied_hu

SMALL = "MobileNetV3Small"  # the smallest backbone: 32 x 32 inputs keep these tests fast


def hu(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1100, 500, shape).astype(np.float32)


def source_backbone(name=SMALL, seed=7, **kwargs):
    """A randomly initialised no-top backbone whose BatchNorm statistics are random too, so that
    loading them (and keeping them) is visible."""
    keras.utils.set_random_seed(seed)
    net = getattr(keras.applications, name)(input_shape=(32, 32, 3), include_top=False,
                                            weights=None, **kwargs)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    return net


def snapshot(model):
    """`{(layer, weight): array}` of every backbone weight, and `{weight path: array}` of the head."""
    net = model.get_layer("backbone")
    backbone = {(layer.name, w.name): w.numpy() for layer in net.layers for w in layer.weights}
    head = {w.path: w.numpy() for layer in model.layers if layer is not net for w in layer.weights}
    return backbone, head


def changed(before: dict, after: dict) -> set:
    return {key for key in before if not np.array_equal(before[key], after[key])}


def fit_two_steps(model, learning_rate, seed=0):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    x = hu((4, 32, 32, 1), seed)
    y = np.array([0, 1, 1, 0])
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)  # 2 steps


def test_local_weights_load_then_freeze_then_unfreeze_the_top_block(tmp_path):
    source = source_backbone()
    path = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    source.save_weights(path)
    keras.utils.set_random_seed(99)  # another seed: the weights must come from the file
    model = transfer(input_shape=(32, 32, 1), num_classes=2, backbone=SMALL, weights=str(path))
    net = model.get_layer("backbone")
    assert len(net.weights) == len(source.weights)
    for got, want in zip(net.weights, source.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    fresh = transfer(input_shape=(32, 32, 1), num_classes=2, backbone=SMALL).get_layer("backbone")
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), source.get_weights()))

    # Phase 1: a high learning rate moves the head and nothing in the backbone.
    freeze_backbone(model)
    assert net.trainable_weights == [] and model.trainable_weights
    backbone0, head0 = snapshot(model)
    fit_two_steps(model, 0.1)
    backbone1, head1 = snapshot(model)
    assert changed(backbone0, backbone1) == set()
    assert changed(head0, head1) == set(head0)  # logits kernel and bias

    # Phase 2: exactly the non-BatchNorm weights of the top block move.
    blocks = backbone_blocks(model)
    unfrozen = unfreeze_top_blocks(model, 1)
    top = set(blocks[-1])
    bn = {layer.name for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)}
    expected = {(layer.name, w.name) for layer in net.layers for w in layer.weights
                if layer.name in top and layer.name not in bn}
    assert set(unfrozen) == {layer for layer, _ in expected}
    assert {"expanded_conv_10_expand", "expanded_conv_10_project", "conv_1"} <= set(unfrozen)
    assert len(net.trainable_weights) == len(expected)
    fit_two_steps(model, 1e-3, seed=1)
    backbone2, _ = snapshot(model)
    assert changed(backbone1, backbone2) == expected
    moving = {key for key in backbone1 if key[0] in bn and key[1].startswith("moving_")}
    assert len(moving) == 2 * len(bn) and not moving & changed(backbone1, backbone2)


def test_batch_norm_stays_in_inference_mode_in_a_reloaded_model_with_trainable_batch_norm(tmp_path):
    keras.utils.set_random_seed(0)
    model = transfer(input_shape=(32, 32, 1), num_classes=2, backbone=SMALL, dropout=0.0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    net = loaded.get_layer("backbone")
    assert isinstance(net, InferenceModeModel)
    assert backbone_blocks(loaded) == backbone_blocks(model)
    batch_norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(layer.trainable for layer in batch_norms)  # nothing frozen
    before, _ = snapshot(loaded)
    x = hu((4, 32, 32, 1))
    # What `fit` does: a call in training mode, where a trainable BatchNormalization layer would
    # normalise with the batch's statistics and move its moving statistics towards them.
    assert_allclose(loaded(x, training=True), model(x, training=False))
    after, _ = snapshot(loaded)
    assert changed(before, after) == set()


def test_the_backbone_runs_in_inference_mode_even_when_training():
    # EfficientNetV2's blocks end in stochastic-depth Dropout: in training mode two calls differ.
    keras.utils.set_random_seed(0)
    model = transfer(input_shape=(32, 32, 1), backbone="EfficientNetV2B0", num_classes=2, dropout=0.0)
    x = hu((2, 32, 32, 1))
    features = keras.Model(model.input, model.get_layer("avg_pool").input)
    expected = np.asarray(features(x, training=False))
    assert_allclose(features(x, training=True), expected, atol=0)
    bare = keras.Model(model.get_layer("backbone").inputs, model.get_layer("backbone").outputs)
    assert not np.array_equal(np.asarray(bare(_input_of_backbone(model, x), training=True)), expected)


def test_mixed_precision_model_rebuilds_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = transfer(input_shape=(32, 32, 1), backbone=SMALL, num_classes=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("hu_window").compute_dtype == "float32"
    assert model.get_layer("backbone_range").compute_dtype == "float32"
    x = hu((2, 32, 32, 1))
    assert model(x, training=False).dtype == "float32"
    rebuilt = as_float32(model)
    assert isinstance(rebuilt.get_layer("backbone"), InferenceModeModel)
    for got, want in zip(rebuilt.weights, model.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), np.asarray(want.numpy(), np.float32))


@pytest.mark.parametrize("name,count,stem,top", [
    (SMALL, 12, {"conv", "conv_bn"}, {"expanded_conv_10_project", "conv_1", "conv_1_bn"}),
    ("ResNet50V2", 17, {"conv1_conv"}, {"conv5_block3_1_conv", "post_bn", "post_relu"}),
    ("EfficientNetV2B0", 22, {"stem_conv", "stem_bn"}, {"block6h_project_conv", "top_conv"}),
])
def test_blocks_partition_the_backbone_by_name(name, count, stem, top):
    model = transfer(input_shape=(None, None, 1), backbone=name)
    blocks = backbone_blocks(model)
    net = model.get_layer("backbone")
    names = [layer.name for layer in net.layers[1:]]  # all but the input layer, in order
    assert [n for block in blocks for n in block] == names
    assert len(blocks) == count and stem <= set(blocks[0]) and top <= set(blocks[-1])
    pattern = BACKBONES[name].block_pattern
    for block in blocks[1:]:
        prefixes = {re.match(pattern, n).group(1) for n in block if re.match(pattern, n)}
        assert len(prefixes) == 1  # one block, one prefix
    # Unfreezing everything still leaves every BatchNormalization frozen.
    unfreeze_top_blocks(model, count)
    for layer in net.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable is not is_bn or layer.name == net.layers[0].name
    unfreeze_top_blocks(model, 0)
    assert net.trainable_weights == []
    too_many = rf"between 0 and the backbone's {count} blocks\. Received: n={count + 1}"
    with pytest.raises(ConfigError, match=too_many):
        unfreeze_top_blocks(model, count + 1)


def _input_of_backbone(model, x):
    feeding = model.layers[model.layers.index(model.get_layer("backbone")) - 1]  # a linear chain
    return np.asarray(keras.Model(model.input, feeding.output)(x))


def test_hu_reaches_each_backbone_in_its_own_value_range():
    x = np.array([-2000.0, -1000.0, -300.0, 400.0, 900.0], np.float32).reshape(1, 1, 5, 1)
    x = np.tile(x, (1, 32, 7, 1))  # 32 x 35 image
    window01 = np.clip((x - -1000.0) / 1400.0, 0.0, 1.0)
    expected_rgb = np.repeat(255.0 * window01, 3, axis=-1)  # an 8-bit grey photograph
    mobile = transfer(backbone=SMALL)
    assert_allclose(_input_of_backbone(mobile, x), expected_rgb, atol=1e-4)
    resnet = transfer(backbone="ResNet50V2")
    # ResNet50V2's own preprocessing of that photograph: x / 127.5 - 1, in [-1, 1].
    preprocessed = keras.applications.resnet_v2.preprocess_input(expected_rgb.copy())
    assert_allclose(_input_of_backbone(resnet, x), preprocessed, atol=1e-6)
    assert preprocessed.min() == -1.0 and preprocessed.max() == 1.0


def test_efficientnet_v2_preprocessing_equals_the_backbones_own(tmp_path):
    # kerasmed builds EfficientNetV2-B0 without its preprocessing layers and applies the same
    # ImageNet normalisation itself: the features must equal the stock backbone's.
    stock = source_backbone("EfficientNetV2B0")
    path = tmp_path / "effv2b0_notop.weights.h5"
    stock.save_weights(path)
    model = transfer(input_shape=(32, 32, 1), backbone="EfficientNetV2B0", weights=str(path))
    x = hu((2, 32, 32, 1))
    features = keras.Model(model.input, model.get_layer("avg_pool").input)(x)
    rgb = np.repeat(255.0 * np.clip((x + 1000.0) / 1400.0, 0, 1), 3, axis=-1)
    assert_allclose(features, stock(rgb, training=False), atol=1e-5)


def test_slices_are_mixed_to_three_channels_starting_from_their_mean():
    model = transfer(input_shape=(32, 32, 5), backbone=SMALL, num_classes=3)
    x = hu((2, 32, 32, 5))
    mean = (255.0 * np.clip((x + 1000.0) / 1400.0, 0, 1)).mean(-1, keepdims=True)
    assert_allclose(_input_of_backbone(model, x), np.repeat(mean, 3, axis=-1), atol=1e-3)
    assert model.get_layer("slices_to_rgb").trainable
    three = transfer(input_shape=(32, 32, 3), backbone=SMALL)
    assert "grey_to_rgb" not in [layer.name for layer in three.layers]
    assert "slices_to_rgb" not in [layer.name for layer in three.layers]


@pytest.mark.parametrize("num_classes,activation,expected", [
    (1, None, "sigmoid"), (4, None, "softmax"), (3, "sigmoid", "sigmoid"),
])
def test_output_shape_and_activation(num_classes, activation, expected):
    model = transfer(backbone=SMALL, num_classes=num_classes, activation=activation)
    probs = np.asarray(model(hu((3, 32, 48, 1)), training=False))
    assert probs.shape == (3, num_classes) and probs.dtype == np.float32
    assert model.get_layer("probs").activation.__name__ == expected
    assert model.get_layer("logits").output.shape == (None, num_classes)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    if expected == "softmax":
        assert_allclose(probs.sum(-1), np.ones(3), atol=1e-6)


def test_registry_and_the_unet_arguments_the_trainer_passes():
    assert MODELS.lookup("transfer") is transfer
    model = build_model("transfer", backbone=SMALL, input_shape=(None, None, 1), num_classes=2,
                        filters=16, depth=3, normalization="batch", spatial_dims=2,
                        hu_window=(-160, 240), intensity="hu_window", ct_normalization=None,
                        name="run1")
    assert model.name == "run1" and model.output_shape == (None, 2)
    assert (model.get_layer("hu_window").low, model.get_layer("hu_window").high) == (-160, 240)


def test_images_smaller_than_the_backbones_minimum_are_refused_as_the_config_refuses_them():
    from kerasmed.config import BACKBONE_MODELS
    from kerasmed.models.transfer import MIN_SIDE

    # The TensorFlow-free config check and the builder share one minimum.
    assert BACKBONE_MODELS["transfer"] == MIN_SIDE == 32
    for shape in ((31, 64, 1), (64, 8, 3)):
        with pytest.raises(ConfigError, match=r"^`input_shape` must be at least 32 in H and W \(or "
                           r"None\).*Received: input_shape=" + re.escape(str(shape)) + "$"):
            transfer(input_shape=shape, backbone=SMALL)


def test_weights_that_do_not_match_are_config_errors_naming_the_file(tmp_path):
    def refused(path, match, backbone=SMALL):
        with pytest.raises(ConfigError, match=match) as info:
            transfer(input_shape=(32, 32, 1), backbone=backbone, weights=str(path))
        assert str(path) in str(info.value)

    refused(tmp_path / "missing.weights.h5", "no such file")
    refused("imagenet", r"nothing is downloaded\. Received: weights='imagenet'")
    (tmp_path / "junk.weights.h5").write_text("not hdf5")
    refused(tmp_path / "junk.weights.h5", "must hold the weights of the no-top MobileNetV3Small")
    source = source_backbone()
    source.save_weights(tmp_path / "small.weights.h5")
    refused(tmp_path / "small.weights.h5", "no-top MobileNetV3Large", backbone="MobileNetV3Large")
    with_top = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=4)
    with_top.save_weights(tmp_path / "with_top.weights.h5")
    refused(tmp_path / "with_top.weights.h5", r"holds 210 weight arrays, the backbone has 206")


def test_the_legacy_h5_format_of_keras_applications_downloads_loads(tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # the writer of keras.applications' files

    source = source_backbone()
    with h5py.File(tmp_path / "notop.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = transfer(input_shape=(32, 32, 1), backbone=SMALL, weights=str(tmp_path / "notop.h5"))
    for got, want in zip(model.get_layer("backbone").get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs,match", [
    ({"backbone": "VGG16"},
     r"backbone` must be one of \[.*'MobileNetV3Small'.*\]\. Received: backbone='VGG16'"),
    ({"spatial_dims": 3}, r"2D models only.*Received: spatial_dims=3"),
    ({"input_shape": (32, 32, None)}, r"known number of channels C\. Received: input_shape"),
    ({"activation": "softmax"}, r"num_classes` >= 2"),
    ({"num_classes": 0}, r"num_classes` must be positive\. Received: num_classes=0"),
    ({"dropout": -0.1}, r"dropout` must be in \[0, 1\)"),
    ({"weights": "resnet.keras"}, r"\.weights\.h5 or \.h5 file.*Received: weights='resnet\.keras'"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        transfer(**{"backbone": SMALL, **kwargs})


# The fast suite exports MobileNetV3Small to every format through a bundle and parity
# (tests/export/test_classifier_parity.py); these trained, spread-out comparisons are slow.
@pytest.mark.parametrize("fmt,name", [
    pytest.param("onnx", SMALL, marks=pytest.mark.slow),
    pytest.param("onnx", "EfficientNetV2B0", marks=pytest.mark.slow),
    pytest.param("onnx", "ResNet50V2", marks=pytest.mark.slow),
    pytest.param("tflite", SMALL, marks=pytest.mark.slow),
    pytest.param("tflite", "EfficientNetV2B0", marks=pytest.mark.slow),
    pytest.param("tflite", "ResNet50V2", marks=pytest.mark.slow),
])
def test_exported_model_matches_keras(fmt, name, tmp_path):
    keras.utils.set_random_seed(0)
    model = transfer(input_shape=(None, None, 1), backbone=name, num_classes=3)
    x = varied_hu((4, 32, 32, 1))
    train_briefly(model, x)
    expected = np.asarray(model(x, training=False))
    assert expected.std() > 0.1  # spread, so that the tolerance means something
    entry = get_exporter(fmt).export(model, tmp_path)
    runner = make_runner(fmt, tmp_path / entry["file"])
    assert [spec.name for spec in runner.input_specs] == ["image"]
    assert_allclose(runner.predict(x), expected, atol=1e-4)  # the fp32 artefact tolerance
    y = hu((1, 64, 40, 1), seed=1)  # dynamic batch and spatial sizes
    assert_allclose(runner.predict(y), model(y, training=False), atol=1e-4)
