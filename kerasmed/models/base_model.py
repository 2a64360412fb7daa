"""Pieces every model builder shares: argument checks, the intensity layer, normalisation, the head.

The first layer of every model normalises raw intensities inside the graph (`HUWindow` or
`CTNormalization`), so every exported artefact takes raw HU; these helpers build it once for the
U-Net, the classifiers and the transfer-learning models alike.
"""

from __future__ import annotations

import keras

from kerasmed.layers.ct_normalization import CTNormalization
from kerasmed.layers.fused_batch_norm import FusedBatchNormalization
from kerasmed.layers.hu_window import HUWindow
from serving.errors import ConfigError

NORMALIZATIONS = ("batch", "group", "none")
INTENSITIES = ("hu_window", "ct_fingerprint", "none")
ACTIVATIONS = ("sigmoid", "softmax")


def check_normalization(normalization: str) -> None:
    """Raises ConfigError unless `normalization` is one of `NORMALIZATIONS`."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )


def check_sizes(depth: int, filters: int, num_classes: int) -> None:
    """Raises ConfigError unless `depth`, `filters` and `num_classes` are positive."""
    if depth < 1 or filters < 1 or num_classes < 1:
        raise ConfigError(
            "`depth`, `filters` and `num_classes` must be positive. "
            f"Received: depth={depth}, filters={filters}, num_classes={num_classes}"
        )


def check_intensity(intensity: str, ct_normalization: dict | None) -> None:
    """Raises ConfigError for an unknown `intensity`, or "ct_fingerprint" without its numbers."""
    if intensity not in INTENSITIES:
        raise ConfigError(
            f"`intensity` must be one of {INTENSITIES}. Received: intensity={intensity!r}"
        )
    if intensity == "ct_fingerprint" and not isinstance(ct_normalization, dict):
        raise ConfigError(
            "`intensity='ct_fingerprint'` needs `ct_normalization` = {'low', 'high', 'mean', "
            f"'std'}} from the dataset fingerprint. Received: ct_normalization={ct_normalization!r}"
        )


def check_activation(activation: str | None, num_classes: int) -> str:
    """The output activation: `activation`, or by default sigmoid for 1 class and softmax otherwise.

    Raises:
        ConfigError: for an unknown activation, or softmax over a single class (always 1).
    """
    if activation is None:
        return "sigmoid" if num_classes == 1 else "softmax"
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"`activation` must be None or one of {ACTIVATIONS}. Received: activation={activation!r}"
        )
    if activation == "softmax" and num_classes == 1:
        raise ConfigError(
            "`activation='softmax'` needs `num_classes` >= 2 (a softmax over one class is always "
            "1); use 'sigmoid' for a binary output. Received: num_classes=1"
        )
    return activation


def check_dropout(dropout: float) -> None:
    """Raises ConfigError unless 0 <= dropout < 1."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")


def intensity_layer(x, intensity: str, hu_window, ct_normalization: dict | None):
    """Apply the first layer, which normalises raw intensities inside the graph.

    Args:
        x: the `image` input, raw intensities.
        intensity: "hu_window" (`HUWindow` named "hu_window", to [0, 1]), "ct_fingerprint"
            (`CTNormalization` named "ct_normalization") or "none" (`x` unchanged).
        hu_window: `(low, high)` of `HUWindow`.
        ct_normalization: `{"low", "high", "mean", "std"}` of `CTNormalization`.

    Returns:
        The normalised tensor, same shape as `x`.
    """
    # In float32 whatever the mixed-precision policy: raw HU in bfloat16 are 4-8 HU apart, and
    # the first convolution casts the normalised values to its own compute dtype.
    if intensity == "hu_window":
        return HUWindow(*hu_window, name="hu_window", dtype="float32")(x)
    if intensity == "ct_fingerprint":
        return CTNormalization(**ct_normalization, name="ct_normalization", dtype="float32")(x)
    return x


def norm(x, normalization: str, name: str):
    """`normalization` ("batch", "group" or "none") of `x` (2D or 3D, channels last)."""
    if normalization == "batch":
        return FusedBatchNormalization(name=name)(x)
    if normalization == "group":
        return keras.layers.GroupNormalization(groups=min(8, x.shape[-1]), name=name)(x)
    return x


def classification_head(x, num_classes: int, activation: str, dropout: float):
    """Global average pooling, dropout, the `logits` Dense layer and the float32 `probs` output.

    The Dense layer is named "logits" so that temperature scaling can reach (and divide) them.

    Args:
        x: a feature map `(N, *spatial, C)`, 2D or 3D.
        num_classes: output units.
        activation: "sigmoid" or "softmax" (see `check_activation`).
        dropout: dropout rate before the Dense layer (0 for none).

    Returns:
        `probs` `(N, num_classes)`, float32 even under mixed precision.
    """
    pool = keras.layers.GlobalAveragePooling3D if len(x.shape) == 5 else keras.layers.GlobalAveragePooling2D
    x = pool(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    # float32 output even under mixed precision, so losses and exports see full-precision probabilities.
    return keras.layers.Activation(activation, dtype="float32", name="probs")(logits)
