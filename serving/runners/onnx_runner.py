"""Run an ONNX model through onnxruntime, on a CUDA GPU only when one really answers.

The CUDA provider always gets an explicit TF32 setting (off by default, see `serving.providers`),
and `OnnxRunner.provider` names the provider and its precision mode, as the session reports them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.errors import BundleError
from serving.providers import (
    ProviderSpec,
    describe_provider,
    onnx_provider_options,
    with_precision_options,
)
from serving.runners.base_runner import Runner, TensorSpec
from serving.runners.threads import resolve_num_threads

# onnxruntime type strings -> numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _spec(node) -> TensorSpec:
    """TensorSpec of an onnxruntime NodeArg; symbolic or unknown dimensions become None."""
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node.shape or ()))
    return TensorSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


class OnnxRunner(Runner):
    """Runs a `.onnx` file with onnxruntime.

    Args:
        path: the `.onnx` file.
        providers: execution providers, best first: names or `(name, options)` pairs; default
            `serving.providers.onnx_providers()` (CUDA only when a GPU answers,
            `KERASMED_DEVICE=cpu` forces the CPU).
        prefer_gpu: passed to `onnx_providers` when `providers` is not given.
        intra_op_num_threads: threads inside one operator; default `usable_cpu_count()`, the
            CPUs this process may use (onnxruntime's own default counts the machine's physical
            cores, whatever the process's CPU affinity). The count used is
            `runner.intra_op_num_threads`. Operators run one after another (sequential
            execution) with every graph optimisation enabled.
        use_tf32: let the CUDA provider run float32 convolutions and GEMMs in TF32 (Ampere+).
            Off by default so that a float32 artefact computes in float32 on every device; an
            explicit `use_tf32` in the CUDA options of `providers` takes precedence. No effect on
            the CPU.

    Raises:
        BundleError: if the file is missing or onnxruntime cannot load it.
        ConfigError: if `intra_op_num_threads` is not a positive integer.

    Example:
        >>> runner = OnnxRunner("bundle/model.onnx")
        >>> probs = runner.run({"image": x})["probs"]   # x: (N, H, W, 1) float32 HU
        >>> runner.provider
        'onnxruntime 1.31.1 CPUExecutionProvider (fp32)'
    """

    format = "onnx"
    # `Bundle.runner` passes its `use_tf32` only to runners that declare they take it.
    accepts_use_tf32 = True

    def __init__(
        self,
        path: str | os.PathLike,
        providers: list[ProviderSpec] | None = None,
        prefer_gpu: bool = True,
        intra_op_num_threads: int | None = None,
        use_tf32: bool = False,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError(f"ONNX model file must exist. Received: path={str(self.path)!r}")
        options = ort.SessionOptions()
        # Warnings go to the log, not stderr; real failures still raise.
        options.log_severity_level = 3
        self.intra_op_num_threads = resolve_num_threads(
            intra_op_num_threads, "intra_op_num_threads"
        )
        options.intra_op_num_threads = self.intra_op_num_threads
        # onnxruntime's defaults, made explicit: the intra-op threads already split every
        # convolution, and running independent nodes side by side would only compete for them.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._providers = (
            with_precision_options(providers, use_tf32)
            if providers
            else onnx_provider_options(prefer_gpu, use_tf32)
        )
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=self._providers
            )
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise BundleError(
                f"onnxruntime could not load the ONNX model. Received: path={str(self.path)!r}, "
                f"{type(err).__name__}: {err}"
            ) from err
        self._inputs = [_spec(n) for n in self._session.get_inputs()]
        self._outputs = [_spec(n) for n in self._session.get_outputs()]

    @property
    def provider(self) -> str:
        """The provider that runs the model and its precision mode, as the session reports them,
        e.g. "onnxruntime 1.31.1 CUDAExecutionProvider (tf32 off)"."""
        name = self._session.get_providers()[0]
        return describe_provider(name, self._session.get_provider_options().get(name))

    @property
    def provider_options(self) -> dict[str, dict[str, str]]:
        """Options of every provider of the session, as onnxruntime reports them."""
        return {k: dict(v) for k, v in self._session.get_provider_options().items()}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [s.name for s in self._outputs]
        values = self._session.run(names, {k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return dict(zip(names, values, strict=True))
