"""Classification models built from scratch: a plain CNN and a residual CNN, in 2D or 3D.

Both take raw intensities (HU for CT): their first layer is the U-Net's intensity layer
(`HUWindow` or `CTNormalization`, in float32). Their head is global average pooling, dropout, a
Dense layer named `logits` (temperature scaling divides its output) and a float32 activation
named `probs`: sigmoid for one class or multi-label outputs, softmax for exclusive classes.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasmed.models.base_model import (
    check_activation,
    check_dropout,
    check_intensity,
    check_normalization,
    check_sizes,
    classification_head,
    intensity_layer,
    norm,
)
from serving.errors import ConfigError

SPATIAL_DIMS = (2, 3)


@keras.saving.register_keras_serializable(package="kerasmed")
class PortableMaxPooling3D(keras.layers.Layer):
    """2x2x2 max pooling, stride 2, "valid" padding, from strided slices and element-wise maxima.

    The same values as `keras.layers.MaxPooling3D(2)`, but `MaxPooling3D` lowers to
    TensorFlow's `MaxPool3D`, which is not a TFLite builtin op (the converter refuses the model
    without Flex ops); slices and maxima convert to TFLite and ONNX with dynamic sizes. An odd
    size drops its last plane, as "valid" pooling does.

    Args:
        **kwargs: passed to `keras.layers.Layer`.

    Input shape: `(N, D, H, W, C)`. Output shape: `(N, D // 2, H // 2, W // 2, C)`.
    """

    def call(self, inputs):
        x = inputs
        for axis in (1, 2, 3):
            even = ops.shape(x)[axis] // 2 * 2
            index = [slice(None)] * 5
            index[axis] = slice(0, even, 2)
            first = x[tuple(index)]
            index[axis] = slice(1, even, 2)
            x = ops.maximum(first, x[tuple(index)])
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(None if n is None else n // 2 for n in input_shape[1:4]),
                input_shape[4])


def _check(input_shape, num_classes, filters, depth, spatial_dims, normalization, intensity,
           ct_normalization, activation, dropout, builder: str) -> str:
    if spatial_dims not in SPATIAL_DIMS:
        raise ConfigError(
            f"`{builder}` builds 2D or 3D models: `spatial_dims` must be one of {SPATIAL_DIMS}. "
            f"Received: spatial_dims={spatial_dims!r}"
        )
    if len(tuple(input_shape)) != spatial_dims + 1:
        layout = "(H, W, C)" if spatial_dims == 2 else "(D, H, W, C)"
        raise ConfigError(
            f"`input_shape` must be {layout} for spatial_dims={spatial_dims}. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    check_normalization(normalization)
    check_sizes(depth, filters, num_classes)
    check_intensity(intensity, ct_normalization)
    check_dropout(dropout)
    return check_activation(activation, num_classes)


def _conv(spatial_dims: int, filters: int, kernel_size: int, name: str, strides: int = 1,
          use_bias: bool = True):
    conv = keras.layers.Conv2D if spatial_dims == 2 else keras.layers.Conv3D
    return conv(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name=name)


def cnn(
    input_shape=(None, None, 1),
    num_classes: int = 1,
    filters: int = 16,
    depth: int = 3,
    spatial_dims: int = 2,
    normalization: str = "batch",
    hu_window=(-1000.0, 400.0),
    intensity: str = "hu_window",
    ct_normalization: dict | None = None,
    activation: str | None = None,
    dropout: float = 0.0,
    name: str = "cnn",
) -> keras.Model:
    """Build the small plain CNN of the classification tutorials.

    `depth` blocks of (3x3 convolution, normalisation, ReLU, 2x max pooling), the filters doubling
    at each block, then global average pooling, dropout and a Dense head.

    Args:
        input_shape: `(H, W, C)` for `spatial_dims=2` or `(D, H, W, C)` for 3; spatial sizes may
            be None (at least `2**depth` each).
        num_classes: output units.
        filters: filters of the first block, doubled at each block.
        depth: number of conv + pooling blocks.
        spatial_dims: 2 or 3.
        normalization: one of "batch", "group", "none".
        hu_window: `(low, high)` HU window of the first layer when `intensity="hu_window"`.
        intensity: the first layer: "hu_window", "ct_fingerprint" or "none" (see `unet2d`).
        ct_normalization: `{"low", "high", "mean", "std"}`, required by "ct_fingerprint".
        activation: "sigmoid" (binary, or multi-label), "softmax" (exclusive classes) or None:
            sigmoid for one class, softmax otherwise.
        dropout: dropout rate before the Dense head.
        name: model name.

    Returns:
        A `keras.Model` mapping `image` `(N, H, W, C)` (or `(N, D, H, W, C)`) raw intensities to
        `probs` `(N, num_classes)`, float32; the layer "logits" holds the pre-activation scores.

    Raises:
        ConfigError: on an invalid argument.

    Example:
        >>> model = cnn(input_shape=(64, 64, 1), num_classes=3, filters=8)
        >>> model.output_shape
        (None, 3)
    """
    activation = _check(input_shape, num_classes, filters, depth, spatial_dims, normalization,
                        intensity, ct_normalization, activation, dropout, "cnn")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = intensity_layer(inputs, intensity, hu_window, ct_normalization)
    for level in range(depth):
        x = _conv(spatial_dims, filters * 2**level, 3, f"block{level}_conv",
                  use_bias=normalization == "none")(x)
        x = norm(x, normalization, f"block{level}_norm")
        x = keras.layers.Activation("relu", name=f"block{level}_relu")(x)
        x = (keras.layers.MaxPooling2D(2, name=f"block{level}_pool") if spatial_dims == 2
             else PortableMaxPooling3D(name=f"block{level}_pool"))(x)
    outputs = classification_head(x, num_classes, activation, dropout)
    return keras.Model(inputs, outputs, name=name)


def _preact_block(x, filters: int, strides: int, spatial_dims: int, normalization: str, name: str):
    """Pre-activation residual block (He et al. 2016): norm, ReLU, conv, norm, ReLU, conv, + x.

    The shortcut is a 1x1 convolution of the pre-activated input when the block changes the
    number of filters or downsamples, and the identity otherwise.
    """
    preact = norm(x, normalization, f"{name}_norm1")
    preact = keras.layers.Activation("relu", name=f"{name}_relu1")(preact)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(spatial_dims, filters, 1, f"{name}_shortcut", strides=strides)(preact)
    else:
        shortcut = x
    y = _conv(spatial_dims, filters, 3, f"{name}_conv1", strides=strides,
              use_bias=normalization == "none")(preact)
    y = norm(y, normalization, f"{name}_norm2")
    y = keras.layers.Activation("relu", name=f"{name}_relu2")(y)
    y = _conv(spatial_dims, filters, 3, f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


BLOCKS_PER_STAGE = 2


def resnet(
    input_shape=(None, None, 1),
    num_classes: int = 1,
    filters: int = 16,
    depth: int = 3,
    spatial_dims: int = 2,
    normalization: str = "batch",
    hu_window=(-1000.0, 400.0),
    intensity: str = "hu_window",
    ct_normalization: dict | None = None,
    activation: str | None = None,
    dropout: float = 0.0,
    name: str = "resnet",
) -> keras.Model:
    """Build a pre-activation residual CNN (ResNet v2 style) in 2D or 3D.

    A 3x3 stem convolution, then `depth` stages of `BLOCKS_PER_STAGE` (2) pre-activation
    residual blocks; stage `s` has `filters * 2**s` filters and every stage after the first
    downsamples with a stride-2 convolution (no pooling layer, so any spatial size works and the
    3D graph uses only ops that TFLite and ONNX convert). A final norm + ReLU precede the head.

    Args:
        input_shape: `(H, W, C)` for `spatial_dims=2` or `(D, H, W, C)` for 3; spatial sizes may
            be None.
        num_classes: output units.
        filters: filters of the stem and the first stage, doubled at each stage.
        depth: number of stages.
        spatial_dims: 2 or 3.
        normalization: one of "batch", "group", "none".
        hu_window: `(low, high)` HU window of the first layer when `intensity="hu_window"`.
        intensity: the first layer: "hu_window", "ct_fingerprint" or "none" (see `unet2d`).
        ct_normalization: `{"low", "high", "mean", "std"}`, required by "ct_fingerprint".
        activation: "sigmoid", "softmax" or None (sigmoid for one class, softmax otherwise).
        dropout: dropout rate before the Dense head.
        name: model name.

    Returns:
        A `keras.Model` mapping `image` `(N, H, W, C)` (or `(N, D, H, W, C)`) raw intensities to
        `probs` `(N, num_classes)`, float32; the layer "logits" holds the pre-activation scores.

    Raises:
        ConfigError: on an invalid argument.

    Example:
        >>> model = resnet(input_shape=(32, 64, 64, 1), spatial_dims=3, filters=8)
        >>> model.output_shape
        (None, 1)
    """
    activation = _check(input_shape, num_classes, filters, depth, spatial_dims, normalization,
                        intensity, ct_normalization, activation, dropout, "resnet")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = intensity_layer(inputs, intensity, hu_window, ct_normalization)
    x = _conv(spatial_dims, filters, 3, "stem_conv")(x)
    for stage in range(depth):
        for block in range(BLOCKS_PER_STAGE):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _preact_block(x, filters * 2**stage, strides, spatial_dims, normalization,
                              f"stage{stage}_block{block}")
    x = norm(x, normalization, "post_norm")
    x = keras.layers.Activation("relu", name="post_relu")(x)
    outputs = classification_head(x, num_classes, activation, dropout)
    return keras.Model(inputs, outputs, name=name)
