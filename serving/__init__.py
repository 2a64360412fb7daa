"""kerasmed runtime: read medical images, preprocess, run exported models. Needs no TensorFlow."""

from serving.bundle import Bundle, load_bundle
from serving.errors import (
    BundleError,
    ConfigError,
    DataError,
    DependencyError,
    KerasmedError,
    ParityError,
)
from serving.image import Image
from serving.preprocessing import PreprocessRecord, PreprocessSpec, invert, preprocess
from serving.runners import Runner, TensorSpec, make_runner

__all__ = [
    "Bundle",
    "load_bundle",
    "BundleError",
    "ConfigError",
    "DataError",
    "DependencyError",
    "Image",
    "KerasmedError",
    "ParityError",
    "PreprocessRecord",
    "PreprocessSpec",
    "Runner",
    "TensorSpec",
    "invert",
    "make_runner",
    "preprocess",
]
