"""serving.providers: CUDA only when a GPU really answers, TF32 always explicit, never a word on
stderr. The GPU probe is monkeypatched where a test needs a GPU "present" or "absent", so these
tests pass the same way on hosts with and without a GPU."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from serving import providers
from serving.errors import ConfigError
from serving.providers import (
    CPU,
    CUDA,
    describe_provider,
    onnx_provider_options,
    onnx_providers,
    precision_mode,
    with_precision_options,
)


@pytest.fixture
def add_one_onnx(tmp_path):
    """A one-node ONNX model, y = x + 1, built without TensorFlow."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "add_one.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def fresh_probe():
    providers.cuda_gpu_available.cache_clear()
    yield
    providers.cuda_gpu_available.cache_clear()


def test_cpu_only_without_a_gpu(fresh_probe, capfd):
    if any(n.startswith("nvidia") for n in os.listdir("/dev")):
        pytest.skip("this machine has /dev/nvidia*: the no-GPU answer cannot be checked here")
    assert onnx_providers() == [CPU]
    assert providers.cuda_gpu_available() is False
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("choose", [onnx_providers, onnx_provider_options])
def test_session_with_chosen_providers_prints_nothing(fresh_probe, add_one_onnx, capfd, choose):
    session = ort.InferenceSession(str(add_one_onnx), providers=choose())
    y = session.run(None, {"x": np.zeros((2, 3), np.float32)})[0]
    np.testing.assert_array_equal(y, np.ones((2, 3), np.float32))
    assert capfd.readouterr().err == ""


def test_provider_options_with_a_gpu_present(monkeypatch):
    monkeypatch.setattr(providers, "cuda_gpu_available", lambda: True)
    monkeypatch.delenv(providers.DEVICE_ENV, raising=False)
    # TF32 is off unless asked for: a float32 artefact must compute in float32 on the GPU too.
    assert onnx_provider_options() == [(CUDA, {"use_tf32": "0"}), (CPU, {})]
    assert onnx_provider_options(use_tf32=True) == [(CUDA, {"use_tf32": "1"}), (CPU, {})]
    assert onnx_provider_options(prefer_gpu=False) == [(CPU, {})]
    monkeypatch.setenv(providers.DEVICE_ENV, "cpu")
    assert onnx_provider_options(use_tf32=True) == [(CPU, {})]


def test_provider_options_with_no_gpu(monkeypatch):
    monkeypatch.setattr(providers, "cuda_gpu_available", lambda: False)
    monkeypatch.delenv(providers.DEVICE_ENV, raising=False)
    assert onnx_provider_options() == [(CPU, {})]
    assert onnx_provider_options(use_tf32=True) == [(CPU, {})]


def test_explicit_providers_get_an_explicit_tf32_mode():
    assert with_precision_options([CUDA, CPU]) == [(CUDA, {"use_tf32": "0"}), (CPU, {})]
    assert with_precision_options([(CUDA, {"device_id": 1})], use_tf32=True) == [
        (CUDA, {"device_id": "1", "use_tf32": "1"})
    ]
    # A caller's own CUDA option wins over the `use_tf32` argument.
    assert with_precision_options([(CUDA, {"use_tf32": 1})]) == [(CUDA, {"use_tf32": "1"})]
    with pytest.raises(ConfigError, match=r"name or a \(name, options\) pair. Received: 3"):
        with_precision_options([3])


def test_provider_description_names_the_precision():
    assert precision_mode(CPU) == "fp32"
    assert precision_mode(CUDA, {"use_tf32": "0", "device_id": "0"}) == "tf32 off"
    assert precision_mode(CUDA, {"use_tf32": "1"}) == "tf32 on"
    assert precision_mode(CUDA, {}) == "tf32 on"  # onnxruntime's own default
    assert precision_mode("TensorrtExecutionProvider") == "precision not reported"
    assert describe_provider(CUDA, {"use_tf32": "0"}) == (
        f"onnxruntime {ort.__version__} CUDAExecutionProvider (tf32 off)"
    )
    assert describe_provider(CPU) == f"onnxruntime {ort.__version__} CPUExecutionProvider (fp32)"


def test_cuda_first_when_a_gpu_answers(monkeypatch):
    monkeypatch.setattr(providers, "cuda_gpu_available", lambda: True)
    monkeypatch.delenv(providers.DEVICE_ENV, raising=False)
    assert onnx_providers() == [CUDA, CPU]
    assert onnx_providers(prefer_gpu=False) == [CPU]


@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu "])
def test_env_var_forces_cpu(monkeypatch, value):
    monkeypatch.setattr(providers, "cuda_gpu_available", lambda: True)
    monkeypatch.setenv(providers.DEVICE_ENV, value)
    assert onnx_providers() == [CPU]


def test_env_var_unknown_value_is_refused(monkeypatch):
    monkeypatch.setenv(providers.DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match="KERASMED_DEVICE.*Received: KERASMED_DEVICE='tpu'"):
        onnx_providers()


def test_probe_is_false_when_the_driver_is_missing(fresh_probe, monkeypatch):
    monkeypatch.setattr(providers.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    monkeypatch.setattr(
        providers.ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no libcuda"))
    )
    assert providers._cuda_driver_answers() is False
