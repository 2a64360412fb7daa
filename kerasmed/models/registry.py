"""Model name -> builder. Adding a model means one file and one line here."""

from __future__ import annotations

import keras

from kerasmed.models.unet import unet2d
from serving.registry import Registry

MODELS = Registry("model", {"unet2d": unet2d})
MODELS["cnn"] = "kerasmed.models.classifiers:cnn"
MODELS["resnet"] = "kerasmed.models.classifiers:resnet"
MODELS["transfer"] = "kerasmed.models.transfer:transfer"


def build_model(model_name: str, **kwargs) -> keras.Model:
    """Build the model registered as `model_name` with builder arguments `kwargs`.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    return MODELS.lookup(model_name)(**kwargs)
