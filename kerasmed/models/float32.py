"""Rebuild a model trained under mixed precision as a float32 model (for evaluation and export).

Exported artefacts are float32 (the fp16/int8 variants are made from that float32 graph by
quantisation), and parity compares them to this float32 model. A model trained under
`mixed_float16` or `mixed_bfloat16` computes in half precision, so it is rebuilt from its config
with every dtype policy replaced by float32, and its weights are loaded into the rebuilt model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

import kerasmed.layers.hu_window  # noqa: F401 - registers HUWindow for deserialisation
from serving.errors import ConfigError

_LOW_PRECISION = frozenset({"float16", "bfloat16", "mixed_float16", "mixed_bfloat16"})


def _layers(model: keras.Model):
    """Every layer, nested models included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def is_float32(model: keras.Model) -> bool:
    """Whether every layer computes in float32 and every weight is stored in float32."""
    for layer in _layers(model):
        policy = layer.dtype_policy
        if policy.compute_dtype != "float32" or policy.variable_dtype != "float32":
            return False
    return all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.weights)


def _to_float32(config: Any) -> Any:
    """Copy of a serialised config with every half-precision dtype or policy set to float32."""
    if isinstance(config, list):
        return [_to_float32(v) for v in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, str) and value in _LOW_PRECISION:
            out[key] = "float32"
        elif (
            key == "dtype"
            and isinstance(value, dict)
            and value.get("config", {}).get("name") in _LOW_PRECISION
        ):
            out[key] = "float32"
        else:
            out[key] = _to_float32(value)
    return out


def as_float32(model: keras.Model) -> keras.Model:
    """The model in float32: rebuilt from its config when it uses a mixed/half precision policy.

    Args:
        model: a Keras model, e.g. `image` `(N, H, W, 1)` -> `probs` `(N, H, W, C)`.

    Returns:
        `model` itself when it is already float32; otherwise a new model with the same
        architecture, float32 dtype policies everywhere, and the original weights cast to
        float32.

    Raises:
        ConfigError: if the model cannot be rebuilt from its config, or its weights do not fit
            the rebuilt model.

    Example:
        >>> keras.mixed_precision.set_global_policy("mixed_bfloat16")
        >>> model = unet2d()          # trained in bf16
        >>> export_model = as_float32(model)
    """
    if is_float32(model):
        return model
    serialized = _to_float32(keras.saving.serialize_keras_object(model))
    # Layers a custom layer creates in its constructor do not appear in the config and follow
    # the global policy, so rebuild under float32 and restore the caller's policy afterwards.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        rebuilt = keras.saving.deserialize_keras_object(serialized)
    except Exception as err:  # deserialisation raises many unrelated error types
        raise ConfigError(
            "A mixed-precision model must be rebuildable from its config to export it in "
            f"float32 (register custom layers). Received: model={model.name!r}, "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        keras.config.set_dtype_policy(previous)
    weights = model.get_weights()
    shapes = [tuple(w.shape) for w in weights]
    expected = [tuple(w.shape) for w in rebuilt.weights]
    if shapes != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(shapes, expected, strict=False)) if a != b),
            min(len(shapes), len(expected)),
        )
        raise ConfigError(
            "The float32 rebuild must have the same weights as the original model. Received: "
            f"{len(shapes)} original and {len(expected)} rebuilt weights, first difference at "
            f"index {first}"
        )
    rebuilt.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return rebuilt
