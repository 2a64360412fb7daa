from kerasmed.models.registry import MODELS, build_model
from kerasmed.models.unet import unet2d

__all__ = ["MODELS", "build_model", "unet2d"]
