"""Transfer learning: a `keras.applications` backbone (no top) under a classification head.

The model takes raw intensities, as every kerasmed model does:

    image (N, H, W, C) raw HU
      -> hu_window / ct_normalization   the U-Net's intensity layer (float32)
      -> backbone_range                 Rescaling to the value range the backbone expects
      -> grey_to_rgb / slices_to_rgb    C channels -> the backbone's 3 (none when C == 3)
      -> imagenet_normalization         EfficientNetV2-B* only (see `Backbone`)
      -> backbone                       the keras.applications model, called with training=False
      -> avg_pool, head_dropout, logits (Dense), probs (float32 sigmoid or softmax)

Value range: ResNet50V2 (and its V2 siblings) expects [-1, 1] (its `preprocess_input` is
`x / 127.5 - 1`); EfficientNetV2 and MobileNetV3 expect [0, 255] and rescale inside their own
graph (`include_preprocessing=True`; for EfficientNetV2-B* kerasmed applies that same
rescaling and ImageNet normalisation itself, in `imagenet_normalization`, so that the graph
converts to ONNX). `backbone_range` maps the intensity layer's output onto the backbone's
range: the HU window's [0, 1], the fingerprint clip window `[low, high]` after its z-score, or,
with `intensity="none"`, an 8-bit image's [0, 255].

Channels: one grey channel is repeated three times (`grey_to_rgb`, no weights), so pretrained
filters see what they saw on a grey photograph and the first layer stays exactly the pretrained
one. Three channels (e.g. 2.5D slices) feed the backbone directly. Any other count K goes
through a trainable 1x1 convolution (`slices_to_rgb`) initialised to the mean of the K
channels on every output channel: it starts as the grey image of the mean slice, which the
pretrained stem understands, and learns a better mix while the backbone is frozen; a randomly
initialised mix would feed the pretrained stem inputs unlike any it was trained on.

BatchNormalization: the backbone is an `InferenceModeModel` called with `training=False`, so its
BatchNormalization layers normalise with their moving statistics and never update them, frozen
or fine-tuned, even in `fit` and after a save and load (the Keras transfer-learning guide's
advice: small medical batches would wreck ImageNet statistics). A consequence: with
`weights=None` the backbone trains without batch statistics (its BatchNormalization layers are
affine maps); to train from scratch, prefer `kerasmed.models.classifiers.resnet`.

Two-phase schedule:
    >>> model = transfer(input_shape=(224, 224, 1), backbone="MobileNetV3Small", weights=path)
    >>> freeze_backbone(model); model.compile(keras.optimizers.Adam(1e-3), loss); model.fit(...)
    >>> unfreeze_top_blocks(model, 2); model.compile(keras.optimizers.Adam(1e-5), loss)
    >>> model.fit(...)

Blocks (the unit `unfreeze_top_blocks` counts), by layer-name prefix, bottom to top:
    - ResNet V2: `conv{stage}_block{k}_*` (e.g. ResNet50V2's top block is `conv5_block3_*`);
    - EfficientNet / EfficientNetV2: `block{stage}{letter}_*` (EfficientNetV2B0's top is
      `block6h_*`);
    - MobileNetV3: `expanded_conv_*` then `expanded_conv_{k}_*` (MobileNetV3Small's top is
      `expanded_conv_10_*`).
    Layers before the first block (the stem: input rescaling, first convolution) form block 0;
    layers after the last block (ResNet V2 `post_bn`, EfficientNet `top_conv`/`top_bn`,
    MobileNetV3 `conv_1`/`conv_1_bn`) belong to the top block; an unnamed layer (an activation)
    belongs to the block of the layer before it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import NamedTuple

import keras

from kerasmed.models.base_model import (
    check_activation,
    check_dropout,
    check_intensity,
    classification_head,
    intensity_layer,
)
from serving.errors import ConfigError

_RESNET_V2 = r"^(conv\d+_block\d+)_"
_EFFICIENTNET = r"^(block\d+[a-z]+)_"
_MOBILENET_V3 = r"^(expanded_conv(?:_\d+)?)_"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(NamedTuple):
    """What `transfer` needs to know about a `keras.applications` backbone.

    Attributes:
        value_range: `(low, high)` of the inputs the backbone expects.
        block_pattern: regex whose group 1 names a layer's block (see the module docstring).
        own_imagenet_normalization: build it with `include_preprocessing=False` and apply its
            ImageNet mean/std normalisation as a per-channel `Rescaling` (EfficientNetV2-B*:
            its own `Normalization` layer holds mean and variance as captured eager tensors,
            which tf2onnx turns into extra graph inputs).
    """

    value_range: tuple[float, float]
    block_pattern: str
    own_imagenet_normalization: bool = False


BACKBONES = {
    "ResNet50V2": Backbone((-1.0, 1.0), _RESNET_V2),
    "ResNet101V2": Backbone((-1.0, 1.0), _RESNET_V2),
    "ResNet152V2": Backbone((-1.0, 1.0), _RESNET_V2),
    "EfficientNetV2B0": Backbone((0.0, 255.0), _EFFICIENTNET, True),
    "EfficientNetV2B1": Backbone((0.0, 255.0), _EFFICIENTNET, True),
    "EfficientNetV2B2": Backbone((0.0, 255.0), _EFFICIENTNET, True),
    "EfficientNetV2B3": Backbone((0.0, 255.0), _EFFICIENTNET, True),
    "EfficientNetV2S": Backbone((0.0, 255.0), _EFFICIENTNET),
    "MobileNetV3Small": Backbone((0.0, 255.0), _MOBILENET_V3),
    "MobileNetV3Large": Backbone((0.0, 255.0), _MOBILENET_V3),
}
BACKBONE_LAYER = "backbone"
MIN_SIDE = 32  # every backbone halves the image 5 times; keras.applications refuses less
WEIGHT_SUFFIXES = (".weights.h5", ".h5")


@keras.saving.register_keras_serializable(package="kerasmed")
class InferenceModeModel(keras.Model):
    """A functional model that runs in inference mode whatever `training` its caller passes.

    Keras 3 lets the `training=True` of `fit` override a nested model's `training=False`
    (keras-team/keras#20285): a backbone merely called with `training=False` would update its
    BatchNormalization statistics as soon as its BatchNormalization layers are trainable, and
    would run its stochastic-depth Dropout while frozen. This class, built like any functional
    model (`InferenceModeModel(inputs, outputs, name=...)`) and saved and loaded as one, always
    calls its graph with `training=False`.
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        return super().call(inputs, training=False, mask=mask, **kwargs)


def transfer(
    input_shape=(None, None, 1),
    num_classes: int = 1,
    backbone: str = "ResNet50V2",
    weights: str | None = None,
    activation: str | None = None,
    dropout: float = 0.2,
    hu_window=(-1000.0, 400.0),
    intensity: str = "hu_window",
    ct_normalization: dict | None = None,
    name: str = "transfer",
    spatial_dims: int = 2,
    filters: int | None = None,
    depth: int | None = None,
    normalization: str | None = None,
) -> keras.Model:
    """Build a classifier on a pretrained (or random) `keras.applications` backbone.

    Args:
        input_shape: `(H, W, C)`; `H` and `W` may be None (at least 32 each). `C` grey channels
            or slices: 1 is repeated to 3, 3 is used as is, any other count is mixed to 3 by a
            1x1 convolution (see the module docstring).
        num_classes: output units.
        backbone: one of `BACKBONES` (e.g. "ResNet50V2", "EfficientNetV2B0",
            "MobileNetV3Small"), built with `include_top=False`.
        weights: None (random initialisation) or the path of a local weights file of the same
            backbone built with `include_top=False`: a Keras 3 `.weights.h5` file
            (`backbone.save_weights`) or a Keras `.h5` file such as the no-top files
            `keras.applications` downloads. Nothing is ever downloaded.
        activation: "sigmoid", "softmax" or None (sigmoid for one class, softmax otherwise).
        dropout: dropout rate before the Dense head.
        hu_window: `(low, high)` HU window of the first layer when `intensity="hu_window"`.
        intensity: the first layer: "hu_window", "ct_fingerprint" (the window is the
            fingerprint's clip range) or "none" (inputs are 8-bit images in [0, 255]).
        ct_normalization: `{"low", "high", "mean", "std"}`, required by "ct_fingerprint".
        name: model name.
        spatial_dims: must be 2 (the backbones are 2D).
        filters: ignored (the backbone fixes its widths); accepted so that the trainer can pass
            every builder the same arguments.
        depth: ignored, as `filters`.
        normalization: ignored, as `filters` (the backbone has its own BatchNormalization).

    Returns:
        A `keras.Model` mapping `image` `(N, H, W, C)` raw intensities to `probs`
        `(N, num_classes)`, float32; the layer "logits" holds the pre-activation scores and the
        layer "backbone" is the nested backbone model.

    Raises:
        ConfigError: on an invalid argument, or a `weights` file that is missing or does not
            hold this backbone's no-top weights (the message names the file).

    Example:
        >>> model = transfer(input_shape=(224, 224, 1), num_classes=3,
        ...                  backbone="EfficientNetV2B0", weights="effv2b0_notop.weights.h5")
        >>> model.output_shape
        (None, 3)
    """
    del filters, depth, normalization  # fixed by the backbone
    if backbone not in BACKBONES:
        raise ConfigError(
            f"`backbone` must be one of {sorted(BACKBONES)}. Received: backbone={backbone!r}"
        )
    if spatial_dims != 2:
        raise ConfigError(
            f"`transfer` builds 2D models only (the backbones are 2D). Received: spatial_dims={spatial_dims}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] is None or input_shape[-1] < 1:
        raise ConfigError(
            "`input_shape` must be (H, W, C) with a known number of channels C. "
            f"Received: input_shape={input_shape}"
        )
    if any(side is not None and side < MIN_SIDE for side in input_shape[:2]):
        raise ConfigError(
            f"`input_shape` must be at least {MIN_SIDE} in H and W (or None) for a "
            f"keras.applications backbone, which halves the image 5 times. Received: "
            f"input_shape={input_shape}"
        )
    if num_classes < 1:
        raise ConfigError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
    check_intensity(intensity, ct_normalization)
    check_dropout(dropout)
    activation = check_activation(activation, num_classes)

    inputs = keras.Input(input_shape, name="image")
    x = intensity_layer(inputs, intensity, hu_window, ct_normalization)
    spec = BACKBONES[backbone]
    scale, offset = _range_map(intensity, hu_window, ct_normalization, spec.value_range)
    x = keras.layers.Rescaling(scale, offset, name="backbone_range", dtype="float32")(x)
    channels = input_shape[-1]
    if channels == 1:
        x = keras.layers.Concatenate(axis=-1, name="grey_to_rgb", dtype="float32")([x, x, x])
    elif channels != 3:
        x = keras.layers.Conv2D(
            3, 1, name="slices_to_rgb",
            kernel_initializer=keras.initializers.Constant(1.0 / channels),
        )(x)
    if spec.own_imagenet_normalization:
        # x / 255 then (x - mean) / std per channel, as the backbone's own preprocessing does.
        x = keras.layers.Rescaling(
            [1.0 / (255.0 * s) for s in _IMAGENET_STD],
            [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)],
            name="imagenet_normalization", dtype="float32",
        )(x)
    net = _build_backbone(backbone, input_shape[:2], weights)
    # training=False (which `InferenceModeModel` enforces): BatchNormalization uses, and keeps,
    # its moving statistics in both phases.
    x = net(x, training=False)
    outputs = classification_head(x, num_classes, activation, dropout)
    return keras.Model(inputs, outputs, name=name)


def _range_map(intensity, hu_window, ct_normalization, target) -> tuple[float, float]:
    """`(scale, offset)` mapping the intensity layer's output range onto `target`."""
    if intensity == "hu_window":
        source = (0.0, 1.0)
    elif intensity == "ct_fingerprint":
        c = ct_normalization
        source = ((c["low"] - c["mean"]) / c["std"], (c["high"] - c["mean"]) / c["std"])
        if not source[1] > source[0]:
            raise ConfigError(
                "`ct_normalization` must have high > low to map its window onto the backbone's "
                f"input range. Received: low={c['low']}, high={c['high']}"
            )
    else:
        source = (0.0, 255.0)
    scale = (target[1] - target[0]) / (source[1] - source[0])
    return float(scale), float(target[0] - source[0] * scale)


def _build_backbone(backbone: str, spatial, weights) -> keras.Model:
    kwargs = {"include_preprocessing": False} if BACKBONES[backbone].own_imagenet_normalization else {}
    net = getattr(keras.applications, backbone)(
        input_shape=(*spatial, 3), include_top=False, weights=None, **kwargs
    )
    if weights is not None:
        _load_weights(net, backbone, weights)
    # Rewrapped: in inference mode, and renamed (the applications' `name=` argument also selects
    # EfficientNetV2's architecture, so it cannot be used).
    return InferenceModeModel(net.input, net.output, name=BACKBONE_LAYER)


def _load_weights(net: keras.Model, backbone: str, weights) -> None:
    """Load a local no-top weights file into `net`, refusing anything that does not match it."""
    path = Path(weights)
    what = f"the weights of the no-top {backbone} backbone (`include_top=False`)"
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise ConfigError(
            f"`weights` must be None or a local {' or '.join(WEIGHT_SUFFIXES)} file of {what}; "
            f"nothing is downloaded. Received: weights={str(weights)!r}"
        )
    if not path.is_file():
        raise ConfigError(
            f"`weights` file must exist and hold {what}; nothing is downloaded. "
            f"Received: weights={str(path)!r} (no such file)"
        )
    with warnings.catch_warnings(record=True) as caught:
        # Keras warns (and keeps fresh weights) for parts of the file it cannot place.
        warnings.simplefilter("always")
        try:
            net.load_weights(str(path))
            problem = None
        except Exception as err:  # h5py, ValueError, OSError ... all mean "not this backbone"
            problem = err
    skipped = [message for message in map(str, (w.message for w in caught))
               if ("Skipping" in message or "could not be loaded" in message)
               and "optimizer" not in message]  # a training checkpoint's optimizer is no mismatch
    if problem is None and skipped:
        problem = skipped[0]
    if problem is None and path.name.endswith(".weights.h5"):
        found = _weights_h5_count(path)
        if found != len(net.weights):
            problem = f"the file holds {found} weight arrays, the backbone has {len(net.weights)}"
    if problem is not None:
        detail = f"{type(problem).__name__}: {problem}" if isinstance(problem, Exception) else problem
        raise ConfigError(
            f"`weights` file must hold {what}. Received: weights={str(path)!r}, "
            + detail.strip().splitlines()[0]
        ) from (problem if isinstance(problem, Exception) else None)


def _weights_h5_count(path: Path) -> int:
    """Number of weight arrays a Keras 3 `.weights.h5` file holds for the model (optimizer
    variables excluded): Keras loads a file with extra layers without complaint."""
    import h5py

    count = 0

    def visit(name, obj):
        nonlocal count
        if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
            count += 1

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return count


def _backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a `transfer` model (or `model` itself when it is the backbone)."""
    if model.name == BACKBONE_LAYER:
        return model
    try:
        net = model.get_layer(BACKBONE_LAYER)
    except ValueError as err:
        raise ConfigError(
            f"The model must nest its backbone as a layer named {BACKBONE_LAYER!r} (build it with "
            f"`transfer`). Received: model={model.name!r}"
        ) from err
    return net


def backbone_blocks(model: keras.Model) -> list[list[str]]:
    """The backbone's blocks, bottom (stem) to top, as lists of layer names.

    Args:
        model: a model built by `transfer` (or the backbone model itself).

    Returns:
        `[[stem layer names], [block 1 names], ..., [top block names]]`; every backbone layer
        but the input layer is in exactly one block (see the module docstring for the rule).

    Raises:
        ConfigError: if the model has no backbone, or the backbone's layer names follow none of
            the known block patterns.
    """
    net = _backbone(model)
    layers = [layer for layer in net.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    patterns = {spec.block_pattern for spec in BACKBONES.values()}
    pattern = next((p for p in sorted(patterns) if any(re.match(p, n) for n in names)), None)
    if pattern is None:
        raise ConfigError(
            f"The backbone's layer names must follow a known block pattern {sorted(patterns)}. "
            f"Received: first layers {names[:5]}"
        )
    blocks: list[list[str]] = [[]]
    current = None
    for name in names:
        match = re.match(pattern, name)
        if match and match.group(1) != current:
            current = match.group(1)
            blocks.append([])
        blocks[-1].append(name)
    return blocks


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: make every backbone weight non-trainable (the head stays trainable).

    Recompile the model afterwards: Keras collects trainable weights when it compiles.

    Raises:
        ConfigError: if the model has no backbone layer.
    """
    _backbone(model).trainable = False


def unfreeze_top_blocks(model: keras.Model, n: int) -> list[str]:
    """Phase 2: make the top `n` backbone blocks trainable, BatchNormalization layers excepted.

    Every other backbone layer is frozen (so the call sets the whole state, whatever came
    before); BatchNormalization layers stay frozen inside unfrozen blocks, so their scale and
    offset keep their pretrained values, and (the backbone runs with `training=False`) so do
    their moving statistics. Recompile the model afterwards, usually at a lower learning rate.

    Args:
        model: a model built by `transfer`.
        n: number of top blocks to unfreeze, 0 to `len(backbone_blocks(model))` (all blocks,
            the stem included).

    Returns:
        The names of the backbone layers with weights that are now trainable.

    Raises:
        ConfigError: if `n` is out of range or the model has no backbone.
    """
    blocks = backbone_blocks(model)
    if not 0 <= n <= len(blocks):
        raise ConfigError(
            f"`n` must be between 0 and the backbone's {len(blocks)} blocks. Received: n={n}"
        )
    top = {name for block in blocks[len(blocks) - n:] for name in block}
    net = _backbone(model)
    net.trainable = True  # the container must be trainable for any layer inside it to be
    unfrozen = []
    for layer in net.layers:
        layer.trainable = layer.name in top and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen
