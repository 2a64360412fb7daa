"""Name -> runner class. Adding a runtime means one file and one line in `RUNNERS`."""

from __future__ import annotations

from typing import Any

from serving.registry import Registry
from serving.runners.base_runner import Runner

# Built-in runners live in their own modules and are imported on first use, so that importing
# `serving` never pulls in LiteRT or TensorFlow.
RUNNERS = Registry("runner", {
    "onnx": "serving.runners.onnx_runner:OnnxRunner",
    "tflite": "serving.runners.tflite_runner:TFLiteRunner",
    "saved_model": "serving.runners.saved_model_runner:SavedModelRunner",
})


def register_runner(name: str, cls: type[Runner]) -> type[Runner]:
    """Register a runner class under `name` (used by `kerasmed` for its Keras runner)."""
    return RUNNERS.register(name, cls)


def runner_names() -> list[str]:
    return RUNNERS.names()


def get_runner_class(name: str) -> type[Runner]:
    return RUNNERS.lookup(name)


def make_runner(name: str, path: Any, **kwargs) -> Runner:
    """Build the runner registered as `name` for the artefact at `path`."""
    return get_runner_class(name)(path, **kwargs)
