"""OnnxRunner on the tiny U-Net's ONNX export, against the Keras model.

Device-agnostic: the default provider is CUDA (TF32 off) when a GPU answers and the CPU otherwise;
GPU-only checks carry the `gpu` marker.
"""

import numpy as np
import onnxruntime as ort
import pytest

from serving import providers
from serving.bundle import load_bundle
from serving.errors import BundleError, ConfigError, DataError
from serving.runners import TensorSpec, make_runner
from serving.runners.onnx_runner import OnnxRunner
from serving.runners.threads import usable_cpu_count
from tests.helpers import BAD_INPUTS, assert_allclose, bad_input

ORT = f"onnxruntime {ort.__version__}"
_REAL_SESSION = ort.InferenceSession


def _default_device_provider() -> str:
    if providers.requested_device() == "auto" and providers.cuda_gpu_available():
        return f"{ORT} CUDAExecutionProvider (tf32 off)"
    return f"{ORT} CPUExecutionProvider (fp32)"


def test_specs_and_provider(bundle_dir):
    runner = OnnxRunner(bundle_dir / "model.onnx")
    assert runner.format == "onnx"
    assert runner.input_specs == [TensorSpec("image", (None, None, None, 1), "float32")]
    assert runner.output_specs == [TensorSpec("probs", (None, None, None, 1), "float32")]
    assert runner.provider == _default_device_provider()


def test_cpu_run_reports_cpu_and_fp32(bundle_dir, keras_model):
    runner = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False, use_tf32=True)
    # TF32 is a CUDA mode: asking for it changes nothing on the CPU, and the string says so.
    assert runner.provider == f"{ORT} CPUExecutionProvider (fp32)"
    assert list(runner.provider_options) == ["CPUExecutionProvider"]
    x = np.random.default_rng(3).uniform(-1100, 500, (2, 32, 32, 1)).astype(np.float32)
    assert_allclose(runner.predict(x), keras_model(x, training=False))


class _SessionOnAGpu:
    """Stands in for an onnxruntime session on a GPU host: records the providers it was asked
    for, runs on the CPU, and reports the first provider and its options as a real one does."""

    requested: list = []

    def __init__(self, path, sess_options=None, providers=None):
        type(self).requested = list(providers)
        self._real = _REAL_SESSION(path, sess_options, providers=["CPUExecutionProvider"])
        self.get_inputs, self.get_outputs = self._real.get_inputs, self._real.get_outputs

    def get_providers(self):
        return [name for name, _ in self.requested]

    def get_provider_options(self):
        return {name: dict(options) for name, options in self.requested}


@pytest.fixture
def gpu_present(monkeypatch):
    monkeypatch.setattr(providers, "cuda_gpu_available", lambda: True)
    monkeypatch.delenv(providers.DEVICE_ENV, raising=False)
    monkeypatch.setattr(ort, "InferenceSession", _SessionOnAGpu)


@pytest.mark.parametrize("use_tf32, mode", [(None, "0"), (False, "0"), (True, "1")])
def test_cuda_session_gets_an_explicit_tf32_option(bundle_dir, gpu_present, use_tf32, mode):
    kwargs = {} if use_tf32 is None else {"use_tf32": use_tf32}
    runner = OnnxRunner(bundle_dir / "model.onnx", **kwargs)
    assert _SessionOnAGpu.requested == [
        ("CUDAExecutionProvider", {"use_tf32": mode}), ("CPUExecutionProvider", {}),
    ]
    state = "on" if mode == "1" else "off"
    assert runner.provider == f"{ORT} CUDAExecutionProvider (tf32 {state})"


def test_bundle_runner_passes_use_tf32_through(bundle_dir, gpu_present):
    bundle = load_bundle(bundle_dir, artefacts=["onnx", "tflite"])
    assert bundle.runner("onnx").provider.endswith("CUDAExecutionProvider (tf32 off)")
    assert bundle.runner("onnx", use_tf32=True).provider.endswith("(tf32 on)")
    assert _SessionOnAGpu.requested[0] == ("CUDAExecutionProvider", {"use_tf32": "1"})
    # LiteRT has no TF32 mode: the setting is not passed to it.
    assert bundle.runner("tflite", use_tf32=True).provider.endswith("CPU, XNNPACK (fp32)")


@pytest.mark.gpu
@pytest.mark.parametrize("use_tf32, state", [(False, "off"), (True, "on")])
def test_real_cuda_session_reports_its_tf32_mode(bundle_dir, keras_model, use_tf32, state):
    if not providers.cuda_gpu_available():
        pytest.skip("no CUDA GPU answers on this host")
    runner = OnnxRunner(bundle_dir / "model.onnx", use_tf32=use_tf32)
    assert runner.provider == f"{ORT} CUDAExecutionProvider (tf32 {state})"
    assert runner.provider_options["CUDAExecutionProvider"]["use_tf32"] == str(int(use_tf32))
    if not use_tf32:
        x = np.random.default_rng(4).uniform(-1100, 500, (2, 32, 32, 1)).astype(np.float32)
        assert_allclose(runner.predict(x), keras_model(x, training=False))


@pytest.mark.parametrize("shape", [(3, 32, 48, 1), (1, 16, 16, 1)])
def test_matches_keras_with_dynamic_shapes(bundle_dir, keras_model, shape):
    x = np.random.default_rng(0).uniform(-1100, 500, shape).astype(np.float32)
    runner = make_runner("onnx", bundle_dir / "model.onnx", intra_op_num_threads=1)
    out = runner.run({"image": x})
    assert set(out) == {"probs"} and out["probs"].shape == shape
    assert_allclose(out["probs"], keras_model(x, training=False))


def test_threads_default_to_the_usable_cpus_and_do_not_change_outputs(bundle_dir):
    default = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False)
    one = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False, intra_op_num_threads=1)
    assert default.intra_op_num_threads == usable_cpu_count() and one.intra_op_num_threads == 1
    options = default._session.get_session_options()
    assert options.intra_op_num_threads == usable_cpu_count()
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    x = np.random.default_rng(6).uniform(-1100, 500, (6, 32, 32, 1)).astype(np.float32)
    assert_allclose(default.predict(x), one.predict(x), atol=1e-6)


def test_refuses_bad_inputs(bundle_dir):
    runner = OnnxRunner(bundle_dir / "model.onnx")
    with pytest.raises(DataError, match="expects inputs"):
        runner.run({"x": np.zeros((1, 16, 16, 1), np.float32)})
    with pytest.raises(DataError, match=r"Received: shape=\(1, 16, 16, 3\)"):
        runner.predict(np.zeros((1, 16, 16, 3), np.float32))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_refuses_non_finite_and_non_real_inputs(bundle_dir, case):
    # Before this check one NaN voxel came back as NaN in most of the probabilities, silently.
    runner = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False)
    x, received = bad_input(case, (2, 16, 16, 1))
    with pytest.raises(DataError, match="^Input `image` " + received + "$"):
        runner.run({"image": x})
    with pytest.raises(DataError, match="^Input `image` " + received + "$"):
        runner.predict(x)


def test_float64_overflowing_float32_is_refused_after_the_cast(bundle_dir):
    runner = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False)
    x = np.zeros((1, 16, 16, 1))
    x[0, 3, 3, 0] = 1e39  # finite in float64, +inf in float32
    with pytest.raises(
        DataError,
        match=r"Input `image` cast to float32 must be finite\. Received: 0 NaN and 1 inf values "
        r"in a \(1, 16, 16, 1\) float32 array",
    ):
        runner.predict(x)


@pytest.mark.parametrize("dtype", [np.int16, np.bool_, np.float64])
def test_bool_integer_and_float64_inputs_are_cast_to_the_input_dtype(bundle_dir, dtype):
    runner = OnnxRunner(bundle_dir / "model.onnx", prefer_gpu=False)
    x = np.random.default_rng(7).integers(-1, 2, (2, 16, 16, 1)).astype(dtype)
    assert_allclose(runner.predict(x), runner.predict(x.astype(np.float32)), atol=0.0)


def test_errors(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="Received: path="):
        OnnxRunner(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="could not load"):
        OnnxRunner(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match="intra_op_num_threads=0"):
        OnnxRunner(bundle_dir / "model.onnx", intra_op_num_threads=0)
