"""Name -> runner class. Adding a runtime means one file and one `register_runner` line."""

from __future__ import annotations

import importlib
from typing import Any

from serving.errors import ConfigError
from serving.runners.base_runner import Runner

# Built-in runners live in their own modules and are imported on first use, so that importing
# `serving` never pulls in LiteRT or TensorFlow.
_BUILTIN = {
    "onnx": "serving.runners.onnx_runner:OnnxRunner",
    "tflite": "serving.runners.tflite_runner:TFLiteRunner",
    "saved_model": "serving.runners.saved_model_runner:SavedModelRunner",
}
_REGISTERED: dict[str, type[Runner]] = {}


def register_runner(name: str, cls: type[Runner]) -> type[Runner]:
    """Register a runner class under `name` (used by `kerasmed` for its Keras runner)."""
    _REGISTERED[name] = cls
    return cls


def runner_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_runner_class(name: str) -> type[Runner]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ConfigError(f"Unknown runner `{name}`; valid names: {runner_names()}. Received: {name!r}")
    module, attr = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_runner(name: str, path: Any, **kwargs) -> Runner:
    """Build the runner registered as `name` for the artefact at `path`."""
    return get_runner_class(name)(path, **kwargs)
