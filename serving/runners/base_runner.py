"""The Runner interface: one small contract every runtime implements.

A runner takes named numpy inputs and returns named numpy outputs, and reports its tensor specs and
the provider it runs on. Keras, SavedModel, ONNX and TFLite runners are interchangeable in parity,
predict and bench.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from serving.array_checks import as_real_array, require_finite
from serving.errors import DataError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (`None` for dynamic dimensions) and numpy dtype name of one tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def _checked_input(value, spec: TensorSpec) -> np.ndarray:
    """One input validated against its spec and cast to the spec's dtype.

    Every runner's `run` goes through here, so no runtime ever sees NaN or infinity: a model
    would not fail on them, it would spread them over most of its output.

    Args:
        value: the caller's array for input `spec.name`.
        spec: the model's spec of that input.

    Returns:
        `value` as an array of `spec.dtype` (bool and integer inputs are cast, like floats).

    Raises:
        DataError: if `value` is not an array of real numbers, does not fit `spec.shape`, or
            holds non-finite values before or after the cast (e.g. float64 1e39 overflows
            float32).
    """
    what = f"Input `{spec.name}`"
    array = as_real_array(value, what)
    if array.ndim != len(spec.shape) or any(
        d is not None and d != v for d, v in zip(spec.shape, array.shape)
    ):
        raise DataError(
            f"{what} must have shape {spec.shape} (None = any). Received: shape={array.shape}"
        )
    require_finite(array, what)
    # An overflow becomes infinity, which the check below reports with the cast dtype.
    with np.errstate(over="ignore"):
        cast = np.asarray(array, dtype=spec.dtype)
    if cast.dtype != array.dtype:
        require_finite(cast, f"{what} cast to {cast.dtype}")
    return cast


class Runner(abc.ABC):
    """Runs one model artefact.

    Subclasses set `format`, fill `_inputs` and `_outputs` (lists of TensorSpec) when they load
    the model, and implement `_run` and `provider` (the runtime and its precision mode).

    Example:
        >>> runner = make_runner("onnx", "bundle/model.onnx")
        >>> probs = runner.run({"image": x})["probs"]   # x: (N, H, W, 1) float32 HU
    """

    format: str = ""
    # Whether the constructor takes `use_tf32` (a CUDA float32 math mode); `Bundle.runner`
    # passes its setting only to runners that do.
    accepts_use_tf32: bool = False
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def input_specs(self) -> list[TensorSpec]:
        """Specs of the model inputs."""
        return list(self._inputs)

    @property
    def output_specs(self) -> list[TensorSpec]:
        """Specs of the model outputs."""
        return list(self._outputs)

    @property
    @abc.abstractmethod
    def provider(self) -> str:
        """Where it runs and in which float precision mode, never left implicit.

        Examples: "onnxruntime 1.31.1 CUDAExecutionProvider (tf32 off)",
        "onnxruntime 1.31.1 CPUExecutionProvider (fp32)", "LiteRT 2.3.0 CPU, XNNPACK (fp32)",
        "TensorFlow 2.20.0 GPU (tf32 off)". Parity reports record it for every artefact.
        """

    @abc.abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on validated inputs."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            inputs: one array per input name, e.g. `{"image": (N, H, W, 1) float32}`.

        Returns:
            One array per output name, e.g. `{"probs": (N, H, W, 1) float32}`.

        Raises:
            DataError: on a missing or unknown input name, a rank/channel mismatch, an input
                that is not an array of real numbers (complex, string, object or None), or one
                holding NaN or +-inf (counted in the message).
        """
        specs = {s.name: s for s in self.input_specs}
        if set(inputs) != set(specs):
            raise DataError(
                f"{self.format} runner expects inputs {sorted(specs)}. Received: {sorted(inputs)}"
            )
        return self._run({name: _checked_input(value, specs[name]) for name, value in inputs.items()})

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Single-input, single-output convenience: `run({input: x})[output]`."""
        (inp,) = self.input_specs
        outputs = self.run({inp.name: x})
        return outputs[self.output_specs[0].name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(format={self.format!r}, provider={self.provider!r})"
