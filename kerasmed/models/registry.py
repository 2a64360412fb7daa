"""Model name -> builder. Adding a model means one file and one line here."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kerasmed.models.unet import unet2d
from serving.errors import ConfigError

MODELS: dict[str, Callable[..., keras.Model]] = {
    "unet2d": unet2d,
}


def build_model(name: str, **kwargs) -> keras.Model:
    """Build the model registered as `name` with builder arguments `kwargs`."""
    if name not in MODELS:
        raise ConfigError(f"Unknown model `{name}`; valid names: {sorted(MODELS)}. Received: {name!r}")
    return MODELS[name](**kwargs)
