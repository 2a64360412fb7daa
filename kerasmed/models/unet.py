"""Functional-API 2D U-Net whose graph takes raw intensities (HU for CT)."""

from __future__ import annotations

import keras

from kerasmed.models.base_model import (
    check_intensity,
    check_normalization,
    check_sizes,
    intensity_layer,
    norm,
)
from serving.errors import ConfigError


def _conv_block(x, filters: int, normalization: str, name: str):
    for i in (1, 2):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=normalization == "none", name=f"{name}_conv{i}"
        )(x)
        x = norm(x, normalization, f"{name}_norm{i}")
        x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def unet2d(
    input_shape=(None, None, 1),
    num_classes: int = 1,
    filters: int = 16,
    depth: int = 3,
    spatial_dims: int = 2,
    normalization: str = "batch",
    hu_window=(-1000.0, 400.0),
    intensity: str = "hu_window",
    ct_normalization: dict | None = None,
    name: str = "unet2d",
) -> keras.Model:
    """Build a 2D U-Net for segmentation.

    Upsampling uses stride-2 transposed convolutions rather than `UpSampling2D`, because TFLite
    cannot convert the latter with dynamic spatial dimensions.

    Args:
        input_shape: `(H, W, C)`; `H` and `W` may be `None` (any multiple of `2**depth`).
        num_classes: 1 gives one sigmoid foreground channel; >1 gives a softmax over classes.
        filters: filters of the first level, doubled at each level down.
        depth: number of downsampling steps.
        spatial_dims: must be 2 for this builder.
        normalization: one of "batch", "group", "none".
        hu_window: `(low, high)` HU window of the first layer when `intensity="hu_window"`.
        intensity: the first layer, which normalises raw intensities inside the graph:
            "hu_window" (`HUWindow`, to [0, 1]), "ct_fingerprint" (`CTNormalization`, nnU-Net's
            clip and z-score) or "none" (raw intensities reach the first convolution).
        ct_normalization: `{"low", "high", "mean", "std"}` of `CTNormalization`, required when
            `intensity="ct_fingerprint"` (see `kerasmed.data.fingerprint.ct_normalization`).
        name: model name.

    Returns:
        A `keras.Model` mapping `image` `(N, H, W, C)` raw intensities to `probs`
        `(N, H, W, num_classes)`.

    Raises:
        ConfigError: on an invalid argument.
    """
    if spatial_dims != 2:
        raise ConfigError(f"`unet2d` builds 2D models only. Received: spatial_dims={spatial_dims}")
    check_normalization(normalization)
    check_sizes(depth, filters, num_classes)
    check_intensity(intensity, ct_normalization)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = intensity_layer(inputs, intensity, hu_window, ct_normalization)
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, normalization, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, filters * 2**depth, normalization, "bottom")
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(
            filters * 2**level, 2, strides=2, padding="same", name=f"up{level}_transpose"
        )(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters * 2**level, normalization, f"up{level}")
    activation = "sigmoid" if num_classes == 1 else "softmax"
    logits = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    # float32 output even under mixed precision, so losses and exports see full-precision probabilities.
    outputs = keras.layers.Activation(activation, dtype="float32", name="probs")(logits)
    return keras.Model(inputs, outputs, name=name)
