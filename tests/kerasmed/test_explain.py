"""Grad-CAM and occlusion sensitivity: analytic models, a trained blob detector, the outputs."""

import os

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from matplotlib.image import imread
from skimage.transform import resize

from kerasmed.explain import (
    conv_layer_names,
    default_cam_layer,
    explain_images,
    grad_cam,
    heatmap_peak,
    occlusion_sensitivity,
    write_overlay,
)
from kerasmed.keras_runner import KerasRunner
from serving.errors import ConfigError, DataError
from tests.helpers import assert_allclose

SIZE = 32


# ---------------------------------------------------------------------------------------------
# A CNN trained to find a bright blob


def _blob_images(n, rng):
    """(n, 32, 32, 1) HU: noisy background (-700 +- 40) and a bright bar (+600 HU, 9 x 1 px,
    a distractor in every image); a Gaussian blob (+600 HU peak, sigma 1.5 px) at a random
    centre in half of them. Returns images, labels, blob centres (y, x)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = -700 + 40 * rng.standard_normal((n, SIZE, SIZE))
    labels = rng.random(n) < 0.5
    centres = rng.uniform(5, SIZE - 6, (n, 2))
    for i in range(n):
        while True:  # the bar stays clear of the blob, so a peak is on one or the other
            by, bx = rng.integers(2, SIZE - 10, 2)
            if np.hypot(by + 4 - centres[i, 0], bx + 4 - centres[i, 1]) > 9:
                break
        if rng.random() < 0.5:
            images[i, by, bx:bx + 9] += 600
        else:
            images[i, by:by + 9, bx] += 600
        if labels[i]:
            images[i] += 600 * np.exp(-((yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2) / 4.5)
    return images[..., None].astype(np.float32), labels.astype(int), centres


@pytest.fixture(scope="module")
def blob_model():
    """Softmax over (no blob, blob), trained for 60 steps (about 2 s); a held-out test set."""
    keras.utils.set_random_seed(0)
    x, y, _ = _blob_images(640, np.random.default_rng(0))
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    h = keras.layers.Rescaling(1 / 300, offset=700 / 300)(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(2, name="logits")(h)
    model = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(h))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    test = _blob_images(120, np.random.default_rng(1000))
    return model, test


def _hit_rate(maps, centres, radius):
    return np.mean([np.hypot(*(np.array(heatmap_peak(m)) - c)) <= radius for m, c in zip(maps, centres)])


def test_grad_cam_peaks_on_the_blob_and_only_for_its_class(blob_model):
    model, (x, y, centres) = blob_model
    probs = KerasRunner(model).predict(x)
    assert (probs.argmax(1) == y).mean() >= 0.95  # the model must work for its maps to mean anything
    pos = y == 1
    assert default_cam_layer(model) == "conv2"
    # Measured over training seeds 0-19: every positive's peak within 1.4 px of the blob centre
    # (the 16x16 map is upsampled x2). 2 px and 90% leave room for other CPUs' rounding.
    assert _hit_rate(grad_cam(model, x[pos]), centres[pos], radius=2) >= 0.9
    # The predicted class is the default: here the blob class for (nearly) every positive.
    assert _hit_rate(grad_cam(model, x[pos], class_index=None), centres[pos], radius=2) >= 0.9
    # Control: class 0 ("no blob") weights the same feature maps by the opposite gradients, so
    # its map avoids the blob (measured <= 4.3% hits over seeds 0-19). A map that ignored the
    # class (unweighted activations) would score as high as class 1 here.
    assert _hit_rate(grad_cam(model, x[pos], class_index=0), centres[pos], radius=2) <= 0.2


def test_occlusion_peaks_on_the_blob(blob_model):
    model, (x, y, centres) = blob_model
    pos = y == 1
    # A patch of about twice the blob's FWHM (3.5 px) in steps of 2 px: measured over training
    # seeds 0-19, every positive's peak within 2.1 px (the default 8 px patch in 4 px steps: 82-96%
    # within 3 px, since the map is constant over 4x4 cells).
    maps = occlusion_sensitivity(KerasRunner(model).predict, x[pos], class_index=1, patch=6, stride=2)
    assert maps.shape == (pos.sum(), SIZE, SIZE)
    assert _hit_rate(maps, centres[pos], radius=3) >= 0.9
    # Hiding the blob takes the blob probability down: the drop at the peak is most of it.
    probs = KerasRunner(model).predict(x[pos])[:, 1]
    assert np.median([m.max() / p for m, p in zip(maps, probs)]) > 0.5


# ---------------------------------------------------------------------------------------------
# Hand-built models with analytic maps


def _feature_model(head, kernel, bias, size=8, strides=1, logits_activation=None, head_name="logits"):
    """image (size, size, 1) -> 1x1 conv `feat` (given kernel (1, 1, 1, c) and bias) -> `head`."""
    inp = keras.Input((size, size, 1), name="image")
    conv = keras.layers.Conv2D(kernel.shape[-1], 1, strides=strides, name="feat")
    feat = conv(inp)
    conv.set_weights([kernel, bias])
    out = head(feat, head_name, logits_activation)
    return keras.Model(inp, out)


def _flatten_dense_sigmoid(feat, name, activation):
    dense = keras.layers.Dense(1, name=name)
    z = dense(keras.layers.Flatten()(feat))
    return keras.layers.Activation("sigmoid", name="probs")(z)


def _gap_dense(feat, name, activation, classes=3):
    dense = keras.layers.Dense(classes, activation=activation, name=name)
    z = dense(keras.layers.GlobalAveragePooling2D()(feat))
    return z if activation else keras.layers.Activation("softmax", name="probs")(z)


def _normalised(cam):
    cam = np.maximum(cam, 0)
    return cam / cam.max(axis=(1, 2), keepdims=True)


def test_grad_cam_weights_channels_by_the_spatial_mean_of_the_gradient():
    rng = np.random.default_rng(1)
    kernel, bias = np.array([[[[1.0, -0.5, 2.0]]]]), np.array([0.0, 0.3, -0.2])
    model = _feature_model(_flatten_dense_sigmoid, kernel, bias)
    x = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    # Score = sum_ijk W_ijk A_ijk + b, so dScore/dA_ijk = W_ijk and a_k = mean_ij W_ijk: a
    # gradient that varies over the image, unlike a GAP head's.
    w = model.get_layer("logits").kernel.numpy().reshape(8, 8, 3)
    features = x * kernel[0, 0] + bias  # (3, 8, 8, 3), the 1x1 conv by hand
    expected = _normalised(np.einsum("nijk,k->nij", features, w.mean(axis=(0, 1))))
    cam = grad_cam(model, x)
    assert cam.shape == (3, 8, 8) and cam.dtype == np.float32
    assert_allclose(cam, expected, atol=1e-5)
    # Uniform channel weights would give another map, so the test above can tell them apart.
    assert np.abs(_normalised(features.sum(-1)) - expected).max() > 0.1


@pytest.mark.parametrize("logits", ["dense_softmax", "dense_then_activation", "none"])
def test_grad_cam_scores_the_logit_when_a_logits_layer_exists(logits):
    rng = np.random.default_rng(2)
    kernel, bias = rng.normal(size=(1, 1, 1, 4)), rng.normal(size=4) * 0.1
    activation = None if logits == "dense_then_activation" else "softmax"
    name = "head" if logits == "none" else "logits"
    model = _feature_model(_gap_dense, kernel, bias, logits_activation=activation, head_name=name)
    x = rng.normal(size=(4, 8, 8, 1)).astype(np.float32) * 2
    # A weight shared by every class moves every logit alike: the probabilities ignore it, the
    # logits do not, so the two scores give different maps.
    w = rng.normal(size=(4, 3)) + 2 * rng.normal(size=(4, 1))
    model.get_layer(name).set_weights([w, np.zeros(3)])
    features = x * kernel[0, 0] + bias
    probs = np.asarray(model(x))
    c = 2
    # GAP head: dz_c/dA_ijk = W_kc / 64 everywhere; dp_c/dA_ijk = p_c (W_kc - sum_j p_j W_kj) / 64.
    by_logit = _normalised(np.einsum("nijk,k->nij", features, w[:, c]))
    by_prob = _normalised(np.einsum("nijk,nk->nij", features, w[None, :, c] - probs @ w.T))
    assert np.abs(by_logit - by_prob).max() > 0.1
    expected = by_prob if logits == "none" else by_logit
    assert_allclose(grad_cam(model, x, class_index=c), expected, atol=1e-5)
    # class_index None = the predicted class of each image; a batch split changes nothing.
    predicted = probs.argmax(1)
    assert_allclose(grad_cam(model, x), grad_cam(model, x, class_index=predicted, batch_size=3))
    # Each pass unwraps what it wrapped: the layers are as they were.
    assert model.get_layer(name).activation is keras.activations.get(activation)
    assert "call" not in vars(model.get_layer("feat")) and "call" not in vars(model.get_layer(name))
    assert_allclose(np.asarray(model(x)), probs, atol=1e-6)


def test_grad_cam_applies_relu_then_upsamples_bilinearly():
    rng = np.random.default_rng(3)
    kernel, bias = np.array([[[[1.0, -1.0]]]]), np.array([0.0, 0.0])
    # Stride 2: a (4, 4) feature map upsampled to the (8, 8) image.
    model = _feature_model(_flatten_dense_sigmoid, kernel, bias, strides=2)
    x = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    w = model.get_layer("logits").kernel.numpy().reshape(4, 4, 2)
    features = x[:, ::2, ::2] * kernel[0, 0] + bias
    coarse = np.maximum(np.einsum("nijk,k->nij", features, w.mean(axis=(0, 1))), 0)
    assert (coarse == 0).any() and (coarse > 0).any()  # ReLU-then-resize differs from the reverse
    # scikit-image's order-1 resize uses half-pixel centres and edge clamping, as tf.image.resize.
    fine = np.stack([resize(c, (8, 8), order=1, mode="edge", anti_aliasing=False) for c in coarse])
    assert_allclose(grad_cam(model, x), fine / fine.max(axis=(1, 2), keepdims=True), atol=1e-5)


def test_an_image_without_positive_evidence_gets_a_zero_map():
    kernel, bias = np.array([[[[1.0]]]]), np.array([0.0])
    model = _feature_model(_flatten_dense_sigmoid, kernel, bias)
    model.get_layer("logits").set_weights([np.ones((64, 1)), np.zeros(1)])
    cam = grad_cam(model, -np.ones((1, 8, 8, 1), np.float32))  # every activation is negative
    assert_allclose(cam, np.zeros((1, 8, 8)), atol=0)


# ---------------------------------------------------------------------------------------------
# Layer choice


def _nested_model(size=16):
    inner_in = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inner_in)
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c2")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    inp = keras.Input((size, size, 1), name="image")
    h = backbone(inp)
    h = keras.layers.Conv2D(5, size // 2, name="to_1x1")(h)  # valid: (N, 1, 1, 5)
    h = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h))
    return keras.Model(inp, keras.layers.Activation("softmax", name="probs")(h))


def test_conv_layer_names_search_nested_models_and_the_default_skips_1x1_maps():
    model = _nested_model()
    assert conv_layer_names(model) == ["backbone/c1", "backbone/c2", "backbone", "to_1x1"]
    assert default_cam_layer(model) == "backbone"  # to_1x1 is the last 4D layer but 1x1


def test_a_nested_layer_gives_the_map_of_the_same_layer_in_a_flat_model():
    nested = _nested_model()
    inp = keras.Input((16, 16, 1), name="image")
    h = inp
    for name in ("c1", "c2", "to_1x1"):
        layer = nested.get_layer("backbone").get_layer(name) if name != "to_1x1" else nested.get_layer(name)
        h = keras.layers.Conv2D.from_config(layer.get_config())(h)
    h = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h))
    flat = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(h))
    flat.set_weights(nested.get_weights())
    x = np.random.default_rng(4).normal(size=(3, 16, 16, 1)).astype(np.float32)
    assert_allclose(np.asarray(flat(x)), np.asarray(nested(x)))
    for class_index in (0, 2):
        expected = grad_cam(flat, x, layer="c1", class_index=class_index)
        assert expected.max() == 1.0
        assert_allclose(grad_cam(nested, x, layer="backbone/c1", class_index=class_index), expected)
        assert_allclose(grad_cam(nested, x, layer="c1", class_index=class_index), expected)  # unique
    assert_allclose(grad_cam(nested, x, layer="backbone"), grad_cam(flat, x, layer="c2"))


def test_keras_applications_backbone_nested_as_one_layer():
    keras.utils.set_random_seed(5)
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                              weights=None)
    inp = keras.Input((32, 32, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inp))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="logits")(pooled))
    names = conv_layer_names(model)
    assert len(names) > 100 and names[-1] == backbone.name
    layer = default_cam_layer(model)
    # MobileNetV2 reduces 32 px to 1x1 at its last stride (block 13): the default is the last
    # map before it, the stride's zero padding of the 2x2 map, inside the backbone.
    shapes = {n: tuple(backbone.get_layer(n.split("/")[1]).output.shape[1:3]) for n in names[:-1]}
    assert layer == backbone.name + "/block_13_pad" and shapes[layer] == (3, 3)
    assert set(list(shapes.values())[names.index(layer) + 1:]) == {(1, 1)}
    # The reference: the usual Keras recipe, a sub-model of the backbone that also returns the
    # feature map, and the head (GAP, the logits before softmax) applied by hand.
    layer = backbone.name + "/block_5_project"  # (4, 4): a map that upsampling changes
    extractor = keras.Model(backbone.inputs, [backbone.get_layer("block_5_project").output,
                                              backbone.output])
    kernel, bias = model.get_layer("logits").get_weights()
    x = np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype(np.float32)
    for c in (0, 1):
        with tf.GradientTape() as tape:
            features, out = extractor(x, training=False)
            score = tf.reduce_sum(tf.reduce_mean(out, axis=(1, 2)) @ kernel[:, c:c + 1] + bias[c])
        weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        expected = tf.image.resize(cam, (32, 32))[..., 0].numpy()
        expected /= expected.max(axis=(1, 2), keepdims=True)
        assert_allclose(grad_cam(model, x, layer=layer, class_index=c), expected, atol=1e-5)


def test_an_unknown_layer_is_a_config_error_listing_the_valid_names():
    model = _nested_model()
    x = np.zeros((1, 16, 16, 1), np.float32)
    for bad in ("nope", "logits"):  # `logits` exists but has no 4D output
        with pytest.raises(ConfigError) as err:
            grad_cam(model, x, layer=bad)
        message = str(err.value)
        assert "valid names: ['backbone/c1', 'backbone/c2', 'backbone', 'to_1x1']" in message
        assert message.endswith(f"Received: layer={bad!r}")
    with pytest.raises(ConfigError, match=r"class_index.*Received: class_index=3"):
        grad_cam(model, x, class_index=3)
    inp = keras.Input((16, 16, 1), name="image")
    h = keras.ops.stop_gradient(keras.layers.Conv2D(2, 3, name="blocked")(inp))
    h = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(h))
    blocked = keras.Model(inp, keras.layers.Activation("softmax")(h))
    with pytest.raises(ConfigError, match="on the path to the model output. Received: layer='blocked'"):
        grad_cam(blocked, x, layer="blocked")
    with pytest.raises(DataError, match=r"\(N, H, W, K\).*Received: shape=\(16, 16, 1\)"):
        grad_cam(model, x[0])
    with pytest.raises(DataError, match="1 NaN"):
        grad_cam(model, np.where(np.arange(256).reshape(1, 16, 16, 1) == 7, np.nan, x))


# ---------------------------------------------------------------------------------------------
# Occlusion by hand


def _region_mean(region):
    """A 'model' whose probability is the mean of the (first channel of the) pixels in `region`."""
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return batch[:, region[0], region[1], 0].reshape(len(batch), -1).mean(1, keepdims=True)

    return predict, calls


def test_occlusion_averages_the_probability_drop_over_the_patches_covering_a_pixel():
    predict, calls = _region_mean((slice(0, 2), slice(0, 2)))
    x = np.ones((1, 8, 8, 1), np.float32)
    heat = occlusion_sensitivity(predict, x, patch=4, stride=2, fill=0.0, batch_size=4)[0]
    # Patches start at 0, 2, 4 on each axis. Only the one at (0, 0) covers the region (drop 1).
    assert heat[0, 0] == 1.0 and heat[1, 1] == 1.0  # covered only by patch (0, 0)
    assert heat[2, 2] == 0.25  # covered by patches (0, 0), (0, 2), (2, 0), (2, 2)
    assert heat[2, 0] == 0.5 and heat[0, 3] == 0.5  # two patches each, one of them (0, 0)
    assert heat[4:, :].max() == 0.0 and heat[:, 4:].max() == 0.0
    assert calls == [1, 4, 4, 1]  # the unoccluded image, then 9 patches in batches of <= 4
    # Hiding evidence against the class raises its probability: a negative drop.
    heat = occlusion_sensitivity(predict, 0 * x, patch=4, stride=2, fill=1.0)[0]
    assert heat[0, 0] == -1.0 and heat[2, 2] == -0.25 and heat[4:, :].max() == 0.0


def test_occlusion_covers_the_edges_and_fills_with_the_median():
    predict, _ = _region_mean((slice(8, 10), slice(8, 10)))  # the bottom-right corner
    x = np.arange(100, dtype=np.float32).reshape(1, 10, 10, 1)
    # Patches at 0 and 4 leave the last 2 rows and columns; one more at 6 ends at the edge.
    # Filling with the median (49.5) lowers the corner mean from 93.5 to 49.5: drop 44.
    heat = occlusion_sensitivity(predict, x, patch=4, stride=4)[0]
    assert not np.isnan(heat).any()
    assert heat[9, 9] == 44.0  # covered by patch (6, 6) only
    assert heat[7, 7] == 11.0  # by (4, 4), (4, 6), (6, 4) and (6, 6): one of the four hides the corner
    assert heat[:6, :].max() == 0.0


def test_occlusion_class_index_and_predict_contract():
    def predict(batch):  # two classes: mean of the top half, mean of the bottom half
        return np.stack([batch[:, :4].mean((1, 2, 3)), batch[:, 4:].mean((1, 2, 3))], axis=1)

    x = np.zeros((2, 8, 8, 1), np.float32)
    x[0, :4], x[1, 4:] = 1.0, 1.0  # image 0 is class 0, image 1 class 1
    heat = occlusion_sensitivity(predict, x, class_index=None, patch=4, stride=4, fill=0.0)
    assert heat[0, :4].min() > 0 and heat[0, 4:].max() == 0  # each image: its own class's half
    assert heat[1, 4:].min() > 0 and heat[1, :4].max() == 0
    assert_allclose(heat, occlusion_sensitivity(predict, x, class_index=[0, 1], patch=4, stride=4, fill=0.0))
    with pytest.raises(ConfigError, match=r"class_index.*Received: class_index=2"):
        occlusion_sensitivity(predict, x, class_index=2)
    with pytest.raises(ConfigError, match=r"`predict` must return \(B, C\).*Received: shape=\(2,\)"):
        occlusion_sensitivity(lambda b: b.mean((1, 2, 3)), x)
    with pytest.raises(ConfigError, match="Received: patch=0, stride=4"):
        occlusion_sensitivity(predict, x, patch=0)


# ---------------------------------------------------------------------------------------------
# Peaks, overlays and the report


def test_heatmap_peak():
    heat = np.zeros((10, 12))
    heat[3, 7] = 2.0
    assert heatmap_peak(heat) == (3, 7)
    heat[3, 7] = 0.0
    heat[2:6, 4:8] = 1.0  # a 4x4 plateau: its centre (3.5, 5.5); the first of the 4 nearest
    assert heatmap_peak(heat) == (3, 5)
    with pytest.raises(DataError, match=r"2D.*Received: shape=\(1, 10, 12\)"):
        heatmap_peak(heat[None])
    heat[0, 0] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        heatmap_peak(heat)


def _overlay_inputs():
    image = np.full((32, 32), -800.0)
    image[8:16, 8:16] = 100.0
    heat = np.zeros((32, 32))
    heat[20:26, 4:10] = 1.0
    return image, heat


def test_write_overlay_draws_the_heat_over_the_image(tmp_path):
    image, heat = _overlay_inputs()
    path = write_overlay(image, heat, tmp_path / "a.png", title="case a")
    png = imread(path)[..., :3]
    assert png.shape[0] > 100 and png.shape[1] > 100
    colourful = (png.max(-1) - png.min(-1)) > 0.2  # grey pixels have equal channels
    assert 0.01 < colourful.mean() < 0.9  # the heat map is tinted, the rest stays grey
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    with pytest.raises(DataError, match=r"one shape.*image2d \(32, 32\), heatmap \(32, 31\)"):
        write_overlay(image, heat[:, :31], tmp_path / "b.png")


def test_write_overlay_is_atomic(tmp_path, monkeypatch):
    image, heat = _overlay_inputs()
    target = tmp_path / "a.png"
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((src, dst)), real_replace(src, dst)))
    write_overlay(image, heat, target)
    ((src, dst),) = renames
    assert dst == target and src.parent == tmp_path  # a rename within the folder
    assert src.name.startswith(".a.tmp-") and src.suffix == ".png"
    # A failed write leaves the previous file and no temporary.
    target.write_bytes(b"old")
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_overlay(image, heat, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_explain_images_writes_overlays_and_a_csv(blob_model, tmp_path):
    model, (x, y, centres) = blob_model
    pick = np.r_[np.flatnonzero(y == 1)[:2], np.flatnonzero(y == 0)[:1]]
    names = ["pos_a", "pos_b", "neg_c"]
    out = tmp_path / "explain"
    table = explain_images(model, x[pick], names, out, patch=6, stride=2, progress=False)
    probs = KerasRunner(model).predict(x[pick])
    assert list(table["name"]) == names
    assert list(table["predicted_class"]) == list(probs.argmax(1)) == [1, 1, 0]
    assert_allclose(table["probability"], probs.max(1), atol=1e-6)
    cams = grad_cam(model, x[pick], class_index=probs.argmax(1))
    occ = occlusion_sensitivity(KerasRunner(model).predict, x[pick], class_index=None, patch=6, stride=2)
    for i, row in table.iterrows():
        assert (row.gradcam_peak_y, row.gradcam_peak_x) == heatmap_peak(cams[i])
        assert (row.occlusion_peak_y, row.occlusion_peak_x) == heatmap_peak(occ[i])
    for i in range(2):  # the positives' peaks are on their blobs
        assert np.hypot(*(table.loc[i, ["gradcam_peak_y", "gradcam_peak_x"]] - centres[pick[i]])) <= 2
    expected = sorted([f"gradcam_{n}.png" for n in names] + [f"occlusion_{n}.png" for n in names])
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["explain.csv"])
    assert list(table["gradcam_png"]) == [f"gradcam_{n}.png" for n in names]
    pd.testing.assert_frame_equal(pd.read_csv(out / "explain.csv"), table, check_dtype=False)

    table = explain_images(model, x[pick[:1]], ["only"], tmp_path / "no_occ", occlusion=False, progress=False)
    assert table["occlusion_peak_y"].isna().all() and table.loc[0, "occlusion_png"] == ""
    assert sorted(p.name for p in (tmp_path / "no_occ").iterdir()) == ["explain.csv", "gradcam_only.png"]
    for bad in (["a", "a", "b"], ["a", "../b", "c"], ["a", "b"]):
        with pytest.raises(ConfigError, match="`names` must hold one distinct"):
            explain_images(model, x[pick], bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
