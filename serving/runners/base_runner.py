"""The Runner interface: one small contract every runtime implements.

A runner takes named numpy inputs and returns named numpy outputs, and reports its tensor specs and
the provider it runs on. Keras, SavedModel, ONNX and TFLite runners are interchangeable in parity,
predict and bench.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from serving.errors import DataError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (`None` for dynamic dimensions) and numpy dtype name of one tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


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
            DataError: on a missing or unknown input name, or a rank/channel mismatch.
        """
        specs = {s.name: s for s in self.input_specs}
        if set(inputs) != set(specs):
            raise DataError(
                f"{self.format} runner expects inputs {sorted(specs)}. Received: {sorted(inputs)}"
            )
        checked = {}
        for name, value in inputs.items():
            spec = specs[name]
            value = np.asarray(value, dtype=spec.dtype)
            if value.ndim != len(spec.shape) or any(
                d is not None and d != v for d, v in zip(spec.shape, value.shape)
            ):
                raise DataError(
                    f"Input `{name}` must have shape {spec.shape} (None = any). "
                    f"Received: shape={value.shape}"
                )
            checked[name] = value
        return self._run(checked)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Single-input, single-output convenience: `run({input: x})[output]`."""
        (inp,) = self.input_specs
        outputs = self.run({inp.name: x})
        return outputs[self.output_specs[0].name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(format={self.format!r}, provider={self.provider!r})"
