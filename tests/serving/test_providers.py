"""serving.providers: CUDA only when a GPU really answers, and never a word on stderr."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from serving import providers
from serving.errors import ConfigError
from serving.providers import CPU, CUDA, onnx_providers


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


def test_session_with_chosen_providers_prints_nothing(fresh_probe, add_one_onnx, capfd):
    session = ort.InferenceSession(str(add_one_onnx), providers=onnx_providers())
    y = session.run(None, {"x": np.zeros((2, 3), np.float32)})[0]
    np.testing.assert_array_equal(y, np.ones((2, 3), np.float32))
    assert capfd.readouterr().err == ""


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
