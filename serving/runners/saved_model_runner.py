"""Run a TensorFlow SavedModel signature. TensorFlow is imported inside this runner only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from serving.errors import BundleError, ConfigError
from serving.lazy_import import lazy_import
from serving.runners.base_runner import Runner, TensorSpec

DEFAULT_SIGNATURE = "serving_default"


def _spec(name: str, tensor_spec) -> TensorSpec:
    """serving TensorSpec from a `tf.TensorSpec`."""
    shape = tuple(None if d is None else int(d) for d in tensor_spec.shape.as_list())
    return TensorSpec(name, shape, tensor_spec.dtype.as_numpy_dtype().dtype.name)


def tensorflow_precision(tf) -> str:
    """Device and float32 math mode of TensorFlow: "CPU (fp32)", "GPU (tf32 off)" or "GPU (tf32 on)".

    Args:
        tf: the imported `tensorflow` module (passed in so that `serving` never imports it).
    """
    if not tf.config.list_logical_devices("GPU"):
        return "CPU (fp32)"
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    return f"GPU (tf32 {'on' if tf32 else 'off'})"


class SavedModelRunner(Runner):
    """Runs one signature of a SavedModel directory with TensorFlow.

    Args:
        path: the SavedModel directory.
        signature: signature key, default "serving_default".

    Raises:
        DependencyError: if TensorFlow is not installed.
        BundleError: if the directory is missing or cannot be loaded.
        ConfigError: if the SavedModel has no signature `signature`.

    Example:
        >>> runner = SavedModelRunner("bundle/saved_model")
        >>> probs = runner.run({"image": x})["probs"]   # x: (N, H, W, 1) float32 HU
    """

    format = "saved_model"

    def __init__(self, path: str | os.PathLike, signature: str = DEFAULT_SIGNATURE):
        self.path = Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise BundleError(
                "SavedModel directory must exist and hold saved_model.pb. "
                f"Received: path={str(self.path)!r}"
            )
        self._tf = lazy_import("tensorflow", purpose="run SavedModel artefacts")
        try:
            # Keep the loaded object alive: the signature's variables belong to it.
            self._loaded = self._tf.saved_model.load(str(self.path))
        except Exception as err:  # TensorFlow raises many unrelated error types here
            raise BundleError(
                f"TensorFlow could not load the SavedModel. Received: path={str(self.path)!r}, "
                f"{type(err).__name__}: {err}"
            ) from err
        signatures = self._loaded.signatures
        if signature not in signatures:
            raise ConfigError(
                f"SavedModel signature `{signature}` not found in {str(self.path)!r}; valid names: "
                f"{sorted(signatures)}. Received: signature={signature!r}"
            )
        self._fn = signatures[signature]
        _, kwargs = self._fn.structured_input_signature
        self._inputs = [_spec(name, spec) for name, spec in sorted(kwargs.items())]
        outputs = self._fn.structured_outputs
        self._outputs = [_spec(name, spec) for name, spec in sorted(outputs.items())]

    @property
    def provider(self) -> str:
        """TensorFlow's version, device and float32 math mode at the time of the call.

        On a GPU, TensorFlow runs float32 convolutions and matmuls in TF32 unless
        `tf.config.experimental.enable_tensor_float_32_execution(False)` was called (a
        process-wide setting that this runner reports but never changes; `export.parity` turns
        it off while it runs). On the CPU the math is float32.
        """
        tf = self._tf
        return f"TensorFlow {tf.__version__} {tensorflow_precision(tf)}"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        outputs = self._fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {name: np.asarray(value.numpy()) for name, value in outputs.items()}
