"""Run a TFLite model through LiteRT (`ai_edge_litert`), imported only when a runner is built."""

from __future__ import annotations

import importlib.metadata
import os
import threading
from pathlib import Path

import numpy as np

from serving.errors import BundleError, ConfigError
from serving.lazy_import import lazy_import
from serving.runners.base_runner import Runner, TensorSpec
from serving.runners.threads import resolve_num_threads

DEFAULT_SIGNATURE = "serving_default"


def _litert_version() -> str:
    """Installed `ai-edge-litert` version, "unknown version" when it has no distribution record."""
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _clean_name(name: str) -> str:
    """Tensor name without the converter's decorations: "serving_default_image:0" -> "image"."""
    name = name.split(":")[0]
    prefix = f"{DEFAULT_SIGNATURE}_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _spec(name: str, detail: dict) -> TensorSpec:
    """TensorSpec from a LiteRT tensor detail; -1 in `shape_signature` becomes None."""
    signature = detail.get("shape_signature")
    if signature is None or len(signature) == 0:
        signature = detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in signature)
    return TensorSpec(name, shape, np.dtype(detail["dtype"]).name)


class TFLiteRunner(Runner):
    """Runs a `.tflite` file with the LiteRT interpreter.

    Uses the named signature (default "serving_default") when the model has one, so inputs and
    outputs keep their names; otherwise it drives the raw input/output tensors. Dynamic batch and
    spatial dimensions are handled by resizing the input tensors before each call.

    Args:
        path: the `.tflite` file.
        signature: signature key to run; if the model has none, raw tensors are used.
        num_threads: interpreter (XNNPACK) threads; default `usable_cpu_count()`, the CPUs this
            process may use (LiteRT's own default is one thread). The count used is
            `runner.num_threads`.

    Raises:
        DependencyError: if `ai-edge-litert` is not installed.
        BundleError: if the file is missing or cannot be loaded.
        ConfigError: if the model has signatures but not `signature`, or `num_threads` is not a
            positive integer.

    Example:
        >>> runner = TFLiteRunner("bundle/model.tflite")
        >>> probs = runner.run({"image": x})["probs"]   # x: (N, H, W, 1) float32 HU
        >>> runner.num_threads   # on a 2-core machine
        2
    """

    format = "tflite"

    def __init__(
        self,
        path: str | os.PathLike,
        signature: str = DEFAULT_SIGNATURE,
        num_threads: int | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError(f"TFLite model file must exist. Received: path={str(self.path)!r}")
        self.num_threads = resolve_num_threads(num_threads, "num_threads")
        litert = lazy_import("ai_edge_litert.interpreter", "ai-edge-litert", "run TFLite models")
        try:
            self._interpreter = litert.Interpreter(
                model_path=str(self.path), num_threads=self.num_threads
            )
        except (ValueError, RuntimeError) as err:
            raise BundleError(
                f"LiteRT could not load the TFLite model. Received: path={str(self.path)!r}, "
                f"{type(err).__name__}: {err}"
            ) from err
        # An interpreter holds mutable tensor buffers: one call at a time.
        self._lock = threading.Lock()
        signatures = self._interpreter.get_signature_list()
        if signatures and signature not in signatures:
            raise ConfigError(
                f"TFLite signature `{signature}` not found in {str(self.path)!r}; valid names: "
                f"{sorted(signatures)}. Received: signature={signature!r}"
            )
        if signatures:
            self._signature = self._interpreter.get_signature_runner(signature)
            self._inputs = [_spec(k, d) for k, d in self._signature.get_input_details().items()]
            self._outputs = [_spec(k, d) for k, d in self._signature.get_output_details().items()]
        else:
            self._signature = None
            self._in_details = self._interpreter.get_input_details()
            self._out_details = self._interpreter.get_output_details()
            self._inputs = [_spec(_clean_name(d["name"]), d) for d in self._in_details]
            self._outputs = [_spec(_clean_name(d["name"]), d) for d in self._out_details]

    @property
    def provider(self) -> str:
        """LiteRT's version, the CPU with its default XNNPACK delegate, and the float mode.

        XNNPACK computes float ops in float32 (it uses fp16 arithmetic only when forced by a
        delegate flag this runner never sets); fp16-quantised weights are dequantised to float32.
        """
        return f"LiteRT {_litert_version()} CPU, XNNPACK (fp32)"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._signature is not None:
                # The signature runner resizes its inputs to each call's shapes.
                out = self._signature(**{k: np.ascontiguousarray(v) for k, v in inputs.items()})
                return {s.name: np.array(out[s.name]) for s in self._outputs}
            return self._run_raw(inputs)

    def _run_raw(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        # Resizing to the current shape is cheap and makes dynamic batch/H/W work.
        for spec, detail in zip(self._inputs, self._in_details, strict=True):
            interpreter.resize_tensor_input(
                detail["index"], list(inputs[spec.name].shape), strict=False
            )
        interpreter.allocate_tensors()
        for spec, detail in zip(self._inputs, self._in_details, strict=True):
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(inputs[spec.name]))
        interpreter.invoke()
        return {
            spec.name: np.array(interpreter.get_tensor(detail["index"]))
            for spec, detail in zip(self._outputs, self._out_details, strict=True)
        }
