"""Pick onnxruntime execution providers without ever asking for a GPU that is not there.

`onnxruntime-gpu` lists `CUDAExecutionProvider` as available even on machines with no GPU, and a
session asked for it then prints a red "Failed to load library libonnxruntime_providers_cuda.so"
error on stderr before falling back to the CPU. So CUDA is requested only after a quiet probe
proves that a CUDA GPU answers and that the CUDA provider library can load.

Environment:
    KERASMED_DEVICE: "cpu" forces the CPU; "auto" (default, also "" / "gpu" / "cuda") uses a CUDA
    GPU when one answers.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import onnxruntime as ort

from serving.errors import ConfigError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICE_ENV = "KERASMED_DEVICE"
_DEVICE_VALUES = ("", "auto", "cpu", "gpu", "cuda")


def _cuda_driver_answers() -> bool:
    """Whether the CUDA driver loads, initialises and reports at least one device."""
    if not glob.glob("/dev/nvidia*"):
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        if cuda.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return False
        return count.value > 0
    except (OSError, AttributeError):
        return False


def _cuda_provider_loads() -> bool:
    """Whether onnxruntime's CUDA provider library and its CUDA/cuDNN dependencies resolve.

    Loading it with ctypes fails silently (an OSError) where onnxruntime would print an error.
    """
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    libs = glob.glob(os.path.join(capi, "libonnxruntime_providers_cuda.so*"))
    if not libs:
        return False
    try:
        shared = os.path.join(capi, "libonnxruntime_providers_shared.so")
        ctypes.CDLL(shared, mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(libs[0])
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def cuda_gpu_available() -> bool:
    """Whether a CUDA GPU really answers and onnxruntime can use it. Probed once, quietly.

    Returns:
        True only if `/dev/nvidia*` exists, `libcuda.so.1` loads, `cuInit(0)` succeeds,
        `cuDeviceGetCount` reports a device, onnxruntime lists the CUDA provider and its
        library loads. Nothing is printed on any path.
    """
    try:
        return (
            CUDA in ort.get_available_providers()
            and _cuda_driver_answers()
            and _cuda_provider_loads()
        )
    except Exception:  # noqa: BLE001 - a probe must never break CPU inference
        return False


def requested_device() -> str:
    """The device asked for through `KERASMED_DEVICE`: "cpu" or "auto".

    Raises:
        ConfigError: if the variable holds an unknown value.
    """
    value = os.environ.get(DEVICE_ENV, "").strip().lower()
    if value not in _DEVICE_VALUES:
        raise ConfigError(
            f"`{DEVICE_ENV}` must be one of {[v for v in _DEVICE_VALUES if v]}. "
            f"Received: {DEVICE_ENV}={value!r}"
        )
    return "cpu" if value == "cpu" else "auto"


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers for an onnxruntime session, best first.

    Args:
        prefer_gpu: use CUDA when a CUDA GPU answers. `KERASMED_DEVICE=cpu` overrides it.

    Returns:
        `["CUDAExecutionProvider", "CPUExecutionProvider"]` when a GPU answers, else
        `["CPUExecutionProvider"]`.

    Example:
        >>> session = ort.InferenceSession("model.onnx", providers=onnx_providers())
    """
    if prefer_gpu and requested_device() == "auto" and cuda_gpu_available():
        return [CUDA, CPU]
    return [CPU]
