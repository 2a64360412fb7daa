"""The Keras model as a Runner: the reference every exported artefact is compared against.

Importing this module registers it as the "keras" runner, so `make_runner("keras", path)` and
`Bundle.runner("keras")` work once `kerasmed` is imported (serving itself never imports it).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

import kerasmed.layers.hu_window  # noqa: F401 - registers HUWindow for load_model
from serving.errors import BundleError
from serving.runners.base_runner import Runner, TensorSpec
from serving.runners.registry import register_runner


def _shape(shape) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in shape)


def _dtype(dtype) -> str:
    """numpy dtype name; half-precision outputs are reported (and returned) as float32."""
    name = keras.backend.standardize_dtype(dtype)
    return "float32" if name in ("float16", "bfloat16") else np.dtype(name).name


class KerasRunner(Runner):
    """Runs a Keras model in inference mode (`training=False`).

    Args:
        path_or_model: a `.keras` file, or a `keras.Model` held in memory.

    Raises:
        BundleError: if the file is missing or Keras cannot load it.

    Example:
        >>> runner = KerasRunner("bundle/model.keras")
        >>> probs = runner.run({"image": x})["probs"]   # x: (N, H, W, 1) float32 HU
    """

    format = "keras"

    def __init__(self, path_or_model: str | os.PathLike | keras.Model):
        if isinstance(path_or_model, keras.Model):
            self.path = None
            self.model = path_or_model
        else:
            self.path = Path(path_or_model)
            if not self.path.is_file():
                raise BundleError(f"Keras model file must exist. Received: path={str(self.path)!r}")
            try:
                self.model = keras.saving.load_model(self.path, compile=False)
            except Exception as err:  # Keras raises many unrelated error types here
                raise BundleError(
                    f"Keras could not load the model file. Received: path={str(self.path)!r}, "
                    f"{type(err).__name__}: {err}"
                ) from err
        self._inputs = [
            TensorSpec(t.name, _shape(t.shape), _dtype(t.dtype)) for t in self.model.inputs
        ]
        self._outputs = [
            TensorSpec(name, _shape(t.shape), _dtype(t.dtype))
            for name, t in zip(self.model.output_names, self.model.outputs, strict=True)
        ]

    @property
    def provider(self) -> str:
        return f"Keras {keras.__version__} ({keras.backend.backend()} backend)"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [inputs[s.name] for s in self._inputs]
        outputs = self.model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(outputs, dict):
            outputs = [outputs[s.name] for s in self._outputs]
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {
            spec.name: np.asarray(keras.ops.convert_to_numpy(value), dtype=spec.dtype)
            for spec, value in zip(self._outputs, outputs, strict=True)
        }


register_runner("keras", KerasRunner)
