"""Floating-point work of a Keras convolutional model, counted from its layers' shapes."""

from __future__ import annotations

import math

import keras

from serving.errors import ConfigError

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def forward_flops(model: keras.Model) -> int:
    """FLOPs (2 per multiply-add) of the model's convolutions for one example.

    Convolutions and transposed convolutions carry almost all of a U-Net's arithmetic; batch norm,
    activations, pooling and concatenation are memory-bound and not counted.

    Args:
        model: a model built on a concrete input shape, e.g. `(96, 96, 5)` (no None spatial dims).

    Returns:
        Forward FLOPs per example.

    Raises:
        ConfigError: if a convolution's spatial shape is not concrete.
    """
    total = 0
    for layer in _conv_layers(model):
        # A Conv does one kernel of multiply-adds per output site; a ConvTranspose scatters one
        # kernel per input site. The kernel holds (*window, in, out) or (*window, out, in) weights.
        tensor = layer.input if isinstance(layer, _TRANSPOSED) else layer.output
        spatial = tuple(tensor.shape[1:-1])
        if any(d is None for d in spatial):
            raise ConfigError(
                f"forward_flops needs a model built on a concrete input shape; layer `{layer.name}` "
                f"has spatial shape {spatial}. Received: input shape {model.inputs[0].shape}"
            )
        total += 2 * math.prod(layer.kernel.shape) * math.prod(spatial)
    return total


def training_flops(model: keras.Model) -> int:
    """Forward + backward FLOPs per example, taken as 3x the forward pass.

    The backward pass computes gradients with respect to both activations and weights, each about
    as costly as the forward pass: the usual 3x rule.
    """
    return 3 * forward_flops(model)


def _conv_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _conv_layers(layer)
        elif isinstance(layer, _CONVS + _TRANSPOSED):
            yield layer
