"""Model name -> builder. Adding a model means one file and one line here."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kerasmed.models.unet import unet2d
from serving.errors import ConfigError

MODELS: dict[str, Callable[..., keras.Model]] = {
    "unet2d": unet2d,
}


def build_model(model_name: str, **kwargs) -> keras.Model:
    """Build the model registered as `model_name` with builder arguments `kwargs`."""
    if model_name not in MODELS:
        raise ConfigError(
            f"Unknown model `{model_name}`; valid names: {sorted(MODELS)}. Received: {model_name!r}"
        )
    return MODELS[model_name](**kwargs)
