"""OnnxRunner on the tiny U-Net's ONNX export, against the Keras model."""

import numpy as np
import pytest

from serving.errors import BundleError, ConfigError, DataError
from serving.runners import TensorSpec, make_runner
from serving.runners.onnx_runner import OnnxRunner
from tests.helpers import assert_allclose


def test_specs_and_provider(bundle_dir):
    runner = OnnxRunner(bundle_dir / "model.onnx")
    assert runner.format == "onnx"
    assert runner.input_specs == [TensorSpec("image", (None, None, None, 1), "float32")]
    assert runner.output_specs == [TensorSpec("probs", (None, None, None, 1), "float32")]
    assert runner.provider == "CPUExecutionProvider"


@pytest.mark.parametrize("shape", [(3, 32, 48, 1), (1, 16, 16, 1)])
def test_matches_keras_with_dynamic_shapes(bundle_dir, keras_model, shape):
    x = np.random.default_rng(0).uniform(-1100, 500, shape).astype(np.float32)
    runner = make_runner("onnx", bundle_dir / "model.onnx", intra_op_num_threads=1)
    out = runner.run({"image": x})
    assert set(out) == {"probs"} and out["probs"].shape == shape
    assert_allclose(out["probs"], keras_model(x, training=False))


def test_refuses_bad_inputs(bundle_dir):
    runner = OnnxRunner(bundle_dir / "model.onnx")
    with pytest.raises(DataError, match="expects inputs"):
        runner.run({"x": np.zeros((1, 16, 16, 1), np.float32)})
    with pytest.raises(DataError, match=r"Received: shape=\(1, 16, 16, 3\)"):
        runner.predict(np.zeros((1, 16, 16, 3), np.float32))


def test_errors(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="Received: path="):
        OnnxRunner(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="could not load"):
        OnnxRunner(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match="intra_op_num_threads=0"):
        OnnxRunner(bundle_dir / "model.onnx", intra_op_num_threads=0)
