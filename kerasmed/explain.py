"""Explain a classifier's decision: Grad-CAM and occlusion sensitivity heat maps.

Both methods answer "which pixels made the model say class c?" for a Keras classifier that maps
`image` `(N, H, W, K)` raw HU to `probs` `(N, C)`:

- `grad_cam` (Selvaraju et al., 2017) weights the channels of one convolutional feature map by
  the spatial mean of the class score's gradient, keeps the positive part and upsamples it to the
  image. It needs the Keras model (TensorFlow backend) and one forward and backward pass.
- `occlusion_sensitivity` (Zeiler and Fergus, 2014) covers the image patch by patch and records
  how far the class probability drops. It needs only a `predict(batch) -> probs` callable, so it
  explains an exported artefact (any serving Runner's `predict`) as well as the Keras model.

`explain_images` runs both over a set of images and writes overlay PNGs and `explain.csv`.

The feature map of any layer, even one inside a nested model (a `keras.applications` backbone
added as one layer), is captured while the model runs eagerly under a `tf.GradientTape`: the
layer's `call` is wrapped for that pass, so no sub-model is rebuilt and skip connections work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from kerasmed.evaluation.plots import _save  # sets the Agg backend too
from serving.array_checks import as_real_array, require_finite
from serving.atomic import atomic_write_text
from serving.errors import ConfigError, DataError

LOGITS_LAYER = "logits"
CSV_NAME = "explain.csv"


def _feature_layers(model: keras.Model, prefix: str = "") -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer with one 4D output, nested models searched depth first."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            found += _feature_layers(layer, path + "/")
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # never called: no output
            continue
        if len(shape) == 4:
            found.append((path, layer))
    return found


def conv_layer_names(model: keras.Model) -> list[str]:
    """The layers whose output is one 4D `(N, h, w, c)` feature map, in the model's order.

    Layers of a nested model (e.g. a `keras.applications` backbone added as one layer) are
    listed as `<nested model>/<layer>`, just before the nested model itself. Input layers are
    left out. A layer called more than once is explained at its last call.

    Args:
        model: a built Keras functional or sequential model.

    Returns:
        Layer paths, e.g. `["hu_window", "conv1", "backbone/block1_conv", "backbone"]`.
    """
    return [path for path, _ in _feature_layers(model)]


def default_cam_layer(model: keras.Model) -> str:
    """The layer Grad-CAM uses when none is named: the last 4D feature map larger than 1x1 that
    is not a pooling layer.

    The last convolutional map holds the most class-specific features (the reason Grad-CAM
    chose it), but a map reduced to 1x1 can no longer say where anything is. A spatial size
    that the model leaves dynamic (`None`) counts as larger than 1.

    Raises:
        ConfigError: if the model has no such layer.
    """
    def larger_than_1x1(layer):
        h, w = layer.output.shape[1:3]
        return h is None or w is None or h * w > 1

    # Not a pooling layer: pooling halves the map's resolution and adds nothing to explain (the
    # usual choice is the last convolution's activation, e.g. `block3_relu`, not `block3_pool`).
    candidates = [p for p, layer in _feature_layers(model) if larger_than_1x1(layer)
                  and not isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D))]
    if not candidates:
        raise ConfigError(
            "Grad-CAM needs a layer with a 4D (N, h, w, c) output larger than 1x1. Received: a "
            f"model whose 4D layers are {conv_layer_names(model)}"
        )
    return candidates[-1]


def _resolve_layer(model: keras.Model, layer: str | None) -> tuple[str, keras.layers.Layer]:
    layers = _feature_layers(model)
    name = default_cam_layer(model) if layer is None else layer
    exact = [(p, lay) for p, lay in layers if p == name]
    bare = [(p, lay) for p, lay in layers if p.rsplit("/", 1)[-1] == name]
    if exact or len(bare) == 1:
        return (exact or bare)[0]
    rule = "must name one layer with a 4D (N, h, w, c) output"
    if len(bare) > 1:
        rule += f" (`{name}` is ambiguous: {[p for p, _ in bare]})"
    raise ConfigError(
        f"Grad-CAM `layer` {rule}; valid names: {[p for p, _ in layers]}. Received: layer={layer!r}"
    )


def _find_logits(model: keras.Model) -> keras.layers.Layer | None:
    for layer in model.layers:
        if layer.name == LOGITS_LAYER:
            return layer
        if isinstance(layer, keras.Model):
            inner = _find_logits(layer)
            if inner is not None:
                return inner
    return None


@contextlib.contextmanager
def _recording(layer, attribute: str, store: dict, key: str, tape: tf.GradientTape, record_input: bool):
    """Wrap `layer.<attribute>` (its `call` or its `activation`) for the block, recording (and
    watching) the tensor it returns, or, for `record_input`, its first argument."""
    original = getattr(layer, attribute)
    own = attribute in vars(layer)  # `activation` is an instance attribute, `call` a method

    def wrapper(*args, **kwargs):
        if record_input:
            tape.watch(args[0])
            store[key] = args[0]
            return original(*args, **kwargs)
        out = original(*args, **kwargs)
        tape.watch(out)
        store[key] = out
        return out

    # object.__setattr__: a plain instance attribute, invisible to Keras' state tracking.
    object.__setattr__(layer, attribute, wrapper)
    try:
        yield
    finally:
        if own:
            object.__setattr__(layer, attribute, original)
        else:
            object.__delattr__(layer, attribute)


def _check_images(images, what: str = "images") -> np.ndarray:
    array = as_real_array(images, f"`{what}`")
    if array.ndim != 4 or 0 in array.shape:
        raise DataError(
            f"`{what}` must be a non-empty (N, H, W, K) array. Received: shape={tuple(array.shape)}"
        )
    require_finite(array, f"`{what}`")
    return array.astype(np.float32, copy=False)


def _single_output(outputs):
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise ConfigError(f"The model must have one output `probs` (N, C). Received: {len(outputs)}")
        outputs = outputs[0]
    if len(outputs.shape) != 2:
        raise ConfigError(f"The model output must be `probs` (N, C). Received: shape={tuple(outputs.shape)}")
    return outputs


def _class_indices(class_index, probs, n: int | None = None) -> np.ndarray:
    """Class index per row of `probs` `(n, C)`; None = the predicted class (0 when C = 1).

    `class_index` is one int or one per image; `n` (default `len(probs)`) is the image count
    it is checked against, when `probs` holds only a batch of them.
    """
    probs = np.asarray(probs)
    n, num_classes = (len(probs) if n is None else n), probs.shape[1]
    if class_index is None:
        return np.zeros(len(probs), int) if num_classes == 1 else np.argmax(probs, axis=-1)
    indices = np.asarray(class_index)
    indices = np.full(n, indices) if indices.ndim == 0 else indices
    if indices.shape != (n,) or indices.dtype.kind not in "iu" or not (
            (indices >= 0) & (indices < num_classes)).all():
        raise ConfigError(
            f"`class_index` must be None, an int or one int per image ({n}), each in [0, {num_classes}). "
            f"Received: class_index={class_index!r}"
        )
    return indices.astype(int)


def grad_cam(model: keras.Model, images, layer: str | None = None, class_index=None,
             batch_size: int = 16) -> np.ndarray:
    """Grad-CAM heat maps of one class, one per image, in [0, 1].

    For feature map `A` `(h, w, c)` of `layer` and class score `y` (the `logits` layer's
    pre-activation when the model has a layer of that name, else the class probability), the
    map is `ReLU(sum_k a_k A_k)` with `a_k = mean_ij dy/dA_ijk`, resized bilinearly to the image
    (half-pixel centres, as `tf.image.resize`) and divided by its maximum (an image with no
    positive evidence gets all zeros).

    Args:
        model: Keras model `image` `(N, H, W, K)` -> `probs` `(N, C)`, TensorFlow backend; run
            in inference mode (`training=False`).
        images: `(N, H, W, K)` raw intensities (HU), as the model takes them.
        layer: a name from `conv_layer_names(model)` (a nested layer's bare name is accepted
            when it is unique); default `default_cam_layer(model)`.
        class_index: the class to explain: an int, one int per image, or None for the
            predicted class (`argmax(probs)`; index 0 for a single sigmoid output).
        batch_size: images per forward/backward pass.

    Returns:
        `(N, H, W)` float32 heat maps in [0, 1].

    Raises:
        ConfigError: for an unknown layer (the message lists the valid ones), a class index
            out of range, a model without one `(N, C)` output, or a layer the score does not
            depend on.
        DataError: if `images` is not a finite `(N, H, W, K)` array of real numbers.
    """
    images = _check_images(images)
    path, feature_layer = _resolve_layer(model, layer)
    logits_layer = _find_logits(model)
    n, height, width = images.shape[:3]
    maps = []
    batch_size = max(1, int(batch_size))
    for start in range(0, n, batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        store: dict = {}
        with tf.GradientTape(persistent=False) as tape, contextlib.ExitStack() as stack:
            stack.enter_context(_recording(feature_layer, "call", store, "feature", tape, False))
            if logits_layer is not None and logits_layer is not feature_layer:
                if callable(getattr(logits_layer, "activation", None)):
                    stack.enter_context(_recording(logits_layer, "activation", store, "logits", tape, True))
                else:
                    stack.enter_context(_recording(logits_layer, "call", store, "logits", tape, False))
            probs = _single_output(model(batch, training=False))
            scores = store.get("logits", probs)
            if len(scores.shape) != 2 or scores.shape[-1] != probs.shape[-1]:
                scores = probs  # a `logits` layer that is not the (N, C) pre-activation
            indices = _class_indices(class_index, probs, n)[start:start + batch_size] \
                if class_index is not None else _class_indices(None, probs)
            # Images do not interact in inference mode, so one gradient of the summed scores
            # holds every image's own gradient.
            total = tf.reduce_sum(tf.gather(tf.cast(scores, tf.float32), indices, axis=1, batch_dims=1))
        features = store.get("feature")
        grads = None if features is None else tape.gradient(total, features)
        if grads is None:
            raise ConfigError(
                f"Grad-CAM `layer` must lie on the path to the model output. Received: layer={path!r}"
            )
        features, grads = tf.cast(features, tf.float32), tf.cast(grads, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (n, 1, 1, c)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, (height, width), method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
        maps.append(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0))
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32)


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins along one axis; the last patch is moved in to end at the edge, so every
    pixel is covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion_sensitivity(predict: Callable[[np.ndarray], np.ndarray], images, class_index=0,
                          patch: int = 8, stride: int = 4, fill: float | None = None,
                          batch_size: int = 32) -> np.ndarray:
    """How much the class probability drops when each region is hidden, one map per image.

    A `patch` x `patch` square (all channels) slides over the image in steps of `stride`, the
    last one in each row and column moved in to end at the edge; each position is replaced by
    `fill` and the drop `p(original) - p(occluded)` is credited to every pixel under the patch.
    A pixel's value is the mean drop over the patches that covered it.

    Args:
        predict: any `predict(batch (B, H, W, K) float32) -> probs (B, C)` callable, e.g. a
            serving Runner's `predict` or `KerasRunner(model).predict`.
        images: `(N, H, W, K)` raw intensities, as `predict` takes them.
        class_index: the class whose probability is watched: an int, one per image, or None
            for the predicted class (argmax of the unoccluded probabilities; 0 for C = 1).
        patch: side of the occluding square in pixels, cut to the image size if larger.
        stride: step between patch positions in pixels.
        fill: the value put under the patch; default each image's median.
        batch_size: occluded copies per `predict` call.

    Returns:
        `(N, H, W)` float32 probability drops: positive where hiding the pixels lowers the
        class probability (evidence for the class), negative where it raises it.

    Raises:
        ConfigError: for a patch or stride below 1, a class index out of range, or `predict`
            returning anything but `(B, C)`.
        DataError: if `images` is not a finite `(N, H, W, K)` array of real numbers.
    """
    images = _check_images(images)
    if int(patch) < 1 or int(stride) < 1:
        raise ConfigError(f"`patch` and `stride` must be >= 1. Received: patch={patch}, stride={stride}")
    n, height, width, _ = images.shape
    ph, pw = min(int(patch), height), min(int(patch), width)
    positions = [(y, x) for y in _starts(height, ph, int(stride)) for x in _starts(width, pw, int(stride))]

    def run(batch: np.ndarray) -> np.ndarray:
        probs = np.asarray(predict(batch), dtype=np.float64)
        if probs.ndim != 2 or probs.shape[0] != len(batch):
            raise ConfigError(
                f"`predict` must return (B, C) probabilities for a batch of B = {len(batch)}. "
                f"Received: shape={probs.shape}"
            )
        return probs

    batch_size = max(1, int(batch_size))
    base = np.concatenate([run(images[s:s + batch_size]) for s in range(0, n, batch_size)])
    classes = _class_indices(class_index, base)
    maps = np.zeros((n, height, width), np.float32)
    for i, (image, c) in enumerate(zip(images, classes)):
        value = float(np.median(image)) if fill is None else float(fill)
        drops = []
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            batch = np.repeat(image[None], len(chunk), axis=0)
            for j, (y, x) in enumerate(chunk):
                batch[j, y:y + ph, x:x + pw, :] = value
            drops.append(base[i, c] - run(batch)[:, c])
        total, count = np.zeros((height, width)), np.zeros((height, width))
        for (y, x), drop in zip(positions, np.concatenate(drops)):
            total[y:y + ph, x:x + pw] += drop
            count[y:y + ph, x:x + pw] += 1
        maps[i] = total / count
    return maps


def heatmap_peak(heatmap) -> tuple[int, int]:
    """The `(y, x)` pixel where a heat map is highest.

    When several pixels share the maximum (an occlusion map is constant over each
    stride x stride cell), the one nearest their centroid is returned, the first in row-major
    order on a tie, so a plateau's peak is its middle rather than its corner.

    Raises:
        DataError: if `heatmap` is not a finite, non-empty 2D array of real numbers.
    """
    heat = as_real_array(heatmap, "`heatmap`")
    if heat.ndim != 2 or heat.size == 0:
        raise DataError(f"`heatmap` must be a non-empty 2D (H, W) array. Received: shape={heat.shape}")
    require_finite(heat, "`heatmap`")
    ys, xs = np.nonzero(heat == heat.max())
    distance = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    best = int(np.argmin(distance))  # nonzero is row-major, argmin takes the first
    return int(ys[best]), int(xs[best])


def write_overlay(image2d, heatmap, path: str | os.PathLike, title: str = "",
                  window: tuple[float, float] = (-1000.0, 400.0), alpha: float = 0.45) -> Path:
    """A PNG of the image in windowed grey with the heat map over it and its peak marked.

    A heat map with negative values (occlusion) is drawn with a diverging colour map centred
    on 0 (red: evidence for the class, blue: against); a non-negative one with `jet` from 0 to
    its maximum. The file is written under a temporary name and renamed into place.

    Args:
        image2d: `(H, W)` intensities (HU).
        heatmap: `(H, W)` heat map on the same grid.
        path: PNG to write.
        title: figure title.
        window: grey display window (low, high) in HU.
        alpha: opacity of the heat map.

    Returns:
        `path` as a Path.

    Raises:
        DataError: if the arrays are not 2D, finite and of the same shape.
    """
    image = as_real_array(image2d, "`image2d`")
    heat = as_real_array(heatmap, "`heatmap`").astype(np.float64)
    if image.ndim != 2 or heat.shape != image.shape:
        raise DataError(
            "`image2d` and `heatmap` must be 2D arrays of one shape. Received: "
            f"image2d {image.shape}, heatmap {heat.shape}"
        )
    require_finite(image, "`image2d`")
    peak_y, peak_x = heatmap_peak(heat)
    fig, ax = plt.subplots(figsize=(4.2, 4.2 * image.shape[0] / image.shape[1] + 0.4))
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    if heat.min() < 0:
        scale = max(float(np.abs(heat).max()), 1e-12)
        shown = ax.imshow(heat, cmap="RdBu_r", vmin=-scale, vmax=scale, alpha=alpha)
    else:
        shown = ax.imshow(heat, cmap="jet", vmin=0.0, vmax=max(float(heat.max()), 1e-12), alpha=alpha)
    ax.plot(peak_x, peak_y, "+", color="white", ms=10, mew=1.5)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    _save(fig, Path(path))
    return Path(path)


def _check_names(names, n: int) -> list[str]:
    names = [str(name) for name in names]
    bad = [name for name in names if name in ("", ".", "..") or any(c in name for c in "/\\\0")]
    if len(names) != n or bad or len(set(names)) != n:
        raise ConfigError(
            f"`names` must hold one distinct file-name-safe name per image ({n}), without '/' or '\\'. "
            f"Received: {len(names)} names, unsafe {bad}, "
            f"repeated {sorted({x for x in names if names.count(x) > 1})}"
        )
    return names


def explain_images(model: keras.Model, images, names: Sequence[str], out_dir: str | os.PathLike,
                   layer: str | None = None, occlusion: bool = True, class_index=None,
                   patch: int = 8, stride: int = 4, fill: float | None = None,
                   predict: Callable[[np.ndarray], np.ndarray] | None = None, window=(-1000.0, 400.0),
                   batch_size: int = 32, progress: bool = True) -> pd.DataFrame:
    """Grad-CAM and occlusion maps of each image, as overlay PNGs and one CSV row per image.

    Writes into `out_dir` (created if missing) `gradcam_<name>.png`, `occlusion_<name>.png`
    (with `occlusion`) and, last, `explain.csv`; each file is written atomically, so a present
    `explain.csv` means every overlay it names is complete.

    Args:
        model: Keras model `image` `(N, H, W, K)` -> `probs` `(N, C)`.
        images: `(N, H, W, K)` raw intensities (HU).
        names: one distinct name per image, used in the file names (no path separators).
        out_dir: output folder.
        layer: Grad-CAM layer (see `grad_cam`); default `default_cam_layer(model)`.
        occlusion: also compute occlusion sensitivity (`patch`, `stride`, `fill`).
        class_index: class explained: an int, one per image, or None for the predicted class.
        patch, stride, fill: see `occlusion_sensitivity`.
        predict: `predict(batch) -> probs` for the occlusion runs; default the model itself
            (`KerasRunner(model).predict`). Pass an exported artefact's runner to explain it.
        window: grey display window of the overlays, in HU; they show the middle channel of K
            (the centre slice of a 2.5D stack).
        batch_size: occluded copies per `predict` call.
        progress: show a progress bar over the images.

    Returns:
        One row per image: `name`, `predicted_class`, `probability` (of the predicted class),
        `explained_class`, `gradcam_peak_y`, `gradcam_peak_x`, `occlusion_peak_y`,
        `occlusion_peak_x` (empty without `occlusion`), `gradcam_png`, `occlusion_png`.

    Raises:
        ConfigError: for bad names, layer or class index (see `grad_cam`).
        DataError: if `images` is not a finite `(N, H, W, K)` array.
    """
    from kerasmed.keras_runner import KerasRunner  # loads the serving runner registry

    images = _check_images(images)
    names = _check_names(names, len(images))
    channel = images.shape[-1] // 2
    out_dir = Path(out_dir)
    runner = KerasRunner(model)
    predict = predict or runner.predict
    probs = np.asarray(runner.predict(images), dtype=np.float64)
    predicted, explained = _class_indices(None, probs), _class_indices(class_index, probs)
    rows = []
    for i in tqdm(range(len(images)), desc="explain", unit="image", disable=not progress):
        image, name, c = images[i:i + 1], names[i], int(explained[i])
        cam = grad_cam(model, image, layer=layer, class_index=c)[0]
        row = {"name": name, "predicted_class": int(predicted[i]),
               "probability": float(probs[i, predicted[i]]), "explained_class": c}
        row["gradcam_peak_y"], row["gradcam_peak_x"] = heatmap_peak(cam)
        row["gradcam_png"] = f"gradcam_{name}.png"
        write_overlay(image[0, ..., channel], cam, out_dir / row["gradcam_png"], window=window,
                      title=f"{name}: Grad-CAM of class {c} (p={probs[i, c]:.3f})")
        row["occlusion_peak_y"] = row["occlusion_peak_x"] = None
        row["occlusion_png"] = ""
        if occlusion:
            occ = occlusion_sensitivity(predict, image, class_index=c, patch=patch, stride=stride,
                                        fill=fill, batch_size=batch_size)[0]
            row["occlusion_peak_y"], row["occlusion_peak_x"] = heatmap_peak(occ)
            row["occlusion_png"] = f"occlusion_{name}.png"
            write_overlay(image[0, ..., channel], occ, out_dir / row["occlusion_png"], window=window,
                          title=f"{name}: occlusion drop of p(class {c}), patch {patch}")
        rows.append(row)
    columns = ["name", "predicted_class", "probability", "explained_class", "gradcam_peak_y",
               "gradcam_peak_x", "occlusion_peak_y", "occlusion_peak_x", "gradcam_png", "occlusion_png"]
    table = pd.DataFrame(rows, columns=columns).astype({c: "Int64" for c in columns[6:8]})
    atomic_write_text(out_dir / CSV_NAME, table.to_csv(index=False))
    return table
