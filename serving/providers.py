"""Pick onnxruntime execution providers without ever asking for a GPU that is not there.

`onnxruntime-gpu` lists `CUDAExecutionProvider` as available even on machines with no GPU, and a
session asked for it then prints a red "Failed to load library libonnxruntime_providers_cuda.so"
error on stderr before falling back to the CPU. So CUDA is requested only after a quiet probe
proves that a CUDA GPU answers and that the CUDA provider library can load.

The float precision is never left to a provider's default. On Ampere and newer GPUs the CUDA
provider runs float32 convolutions and GEMMs in TF32 (10-bit mantissa) unless told otherwise,
which breaks float32 parity (1.3e-2 max abs error was measured on an H100). So the CUDA provider
always receives an explicit `use_tf32` option, "0" unless TF32 is asked for, and a runner reports
the provider together with its precision mode (`describe_provider`).

Environment:
    KERASMED_DEVICE: "cpu" forces the CPU; "auto" (default, also "" / "gpu" / "cuda") uses a CUDA
    GPU when one answers.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from collections.abc import Mapping, Sequence

import onnxruntime as ort

from serving.errors import ConfigError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TF32_OPTION = "use_tf32"
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


ProviderSpec = str | tuple[str, Mapping[str, object]]


def with_precision_options(
    providers: Sequence[ProviderSpec], use_tf32: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """`(name, options)` pairs for onnxruntime, with the CUDA provider's TF32 mode made explicit.

    Args:
        providers: provider names or `(name, options)` pairs, best first.
        use_tf32: let the CUDA provider use TF32 for float32 convolutions and GEMMs (faster on
            Ampere+, about 1e-3 relative error). Options given for CUDA in `providers` keep their
            own `use_tf32` when they set one.

    Returns:
        One `(name, options)` pair per provider; option values are strings, as onnxruntime
        reports them. CUDA always has `use_tf32` ("0" or "1").

    Raises:
        ConfigError: if an entry is neither a name nor a `(name, options)` pair.

    Example:
        >>> with_precision_options(["CUDAExecutionProvider", "CPUExecutionProvider"])
        [('CUDAExecutionProvider', {'use_tf32': '0'}), ('CPUExecutionProvider', {})]
    """
    out = []
    for entry in providers:
        if isinstance(entry, str):
            name, options = entry, {}
        elif (
            isinstance(entry, (tuple, list))
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], Mapping)
        ):
            name, options = entry[0], dict(entry[1])
        else:
            raise ConfigError(
                "Every onnxruntime provider must be a name or a (name, options) pair. "
                f"Received: {entry!r}"
            )
        options = {str(k): str(v) for k, v in options.items()}
        if name == CUDA:
            options.setdefault(TF32_OPTION, "1" if use_tf32 else "0")
        out.append((name, options))
    return out


def onnx_provider_options(
    prefer_gpu: bool = True, use_tf32: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """`onnx_providers(prefer_gpu)` with their options, TF32 explicit (`with_precision_options`).

    Returns:
        `[("CUDAExecutionProvider", {"use_tf32": "0"}), ("CPUExecutionProvider", {})]` when a GPU
        answers (`"1"` with `use_tf32=True`), else `[("CPUExecutionProvider", {})]`.

    Example:
        >>> session = ort.InferenceSession("model.onnx", providers=onnx_provider_options())
    """
    return with_precision_options(onnx_providers(prefer_gpu), use_tf32)


def precision_mode(provider: str, options: Mapping[str, object] | None = None) -> str:
    """The float32 math mode of an onnxruntime provider, as reported in `Runner.provider`.

    Args:
        provider: provider name, e.g. "CUDAExecutionProvider".
        options: its options as the session reports them (`session.get_provider_options()`).

    Returns:
        "fp32" for the CPU provider; "tf32 off" or "tf32 on" for CUDA (onnxruntime's default,
        when `use_tf32` is not set, is on); "precision not reported" for other providers.
    """
    if provider == CPU:
        return "fp32"
    if provider == CUDA:
        value = str((options or {}).get(TF32_OPTION, "1")).strip().lower()
        return "tf32 off" if value in ("0", "false") else "tf32 on"
    return "precision not reported"


def describe_provider(provider: str, options: Mapping[str, object] | None = None) -> str:
    """`"onnxruntime <version> <provider> (<precision mode>)"`, e.g.
    "onnxruntime 1.31.1 CUDAExecutionProvider (tf32 off)" or "... CPUExecutionProvider (fp32)"."""
    return f"onnxruntime {ort.__version__} {provider} ({precision_mode(provider, options)})"
