"""TFLiteRunner (LiteRT) on the tiny U-Net's TFLite export, against the Keras model."""

import importlib.metadata

import numpy as np
import pytest

from serving.errors import BundleError, ConfigError, DataError
from serving.runners import TensorSpec, make_runner
from serving.runners.tflite_runner import TFLiteRunner
from serving.runners.threads import usable_cpu_count
from tests.helpers import assert_allclose, bad_input


def test_signature_runner_specs(bundle_dir):
    runner = TFLiteRunner(bundle_dir / "model.tflite")
    assert runner.format == "tflite"
    assert runner.input_specs == [TensorSpec("image", (None, None, None, 1), "float32")]
    assert runner.output_specs == [TensorSpec("probs", (None, None, None, 1), "float32")]
    version = importlib.metadata.version("ai-edge-litert")
    assert runner.provider == f"LiteRT {version} CPU, XNNPACK (fp32)"


@pytest.mark.parametrize("case", ["nan", "-inf", "none"])
def test_refuses_non_finite_and_none_inputs(bundle_dir, case):
    # The shared `Runner.run` check; without it one NaN voxel made most probabilities NaN.
    runner = TFLiteRunner(bundle_dir / "model.tflite", num_threads=1)
    x, received = bad_input(case, (1, 16, 16, 1))
    with pytest.raises(DataError, match="^Input `image` " + received + "$"):
        runner.predict(x)


def test_matches_keras_with_dynamic_batch_and_size(bundle_dir, keras_model):
    runner = make_runner("tflite", bundle_dir / "model.tflite", num_threads=1)
    rng = np.random.default_rng(1)
    for shape in [(3, 32, 48, 1), (1, 16, 16, 1), (5, 32, 32, 1)]:
        x = rng.uniform(-1100, 500, shape).astype(np.float32)
        out = runner.run({"image": x})["probs"]
        assert out.shape == shape
        assert_allclose(out, keras_model(x, training=False))


def test_threads_default_to_the_usable_cpus(bundle_dir, monkeypatch):
    import ai_edge_litert.interpreter as litert

    asked = []

    class Spy(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            asked.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", Spy)
    # LiteRT's own default is one thread; the runner asks for every CPU it may use.
    assert TFLiteRunner(bundle_dir / "model.tflite").num_threads == usable_cpu_count()
    assert TFLiteRunner(bundle_dir / "model.tflite", num_threads=2).num_threads == 2
    assert asked == [usable_cpu_count(), 2]


def test_thread_count_does_not_change_outputs(bundle_dir):
    x = np.random.default_rng(5).uniform(-1100, 500, (6, 32, 32, 1)).astype(np.float32)
    one = TFLiteRunner(bundle_dir / "model.tflite", num_threads=1).predict(x)
    for threads in (2, None):
        assert_allclose(TFLiteRunner(bundle_dir / "model.tflite", num_threads=threads).predict(x),
                        one, atol=1e-6)


def test_raw_tensor_path_without_signatures(bundle_dir, keras_model, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setattr(Interpreter, "get_signature_list", lambda self: {})
    runner = TFLiteRunner(bundle_dir / "model.tflite")
    assert runner.input_specs[0] == TensorSpec("image", (None, None, None, 1), "float32")
    for shape in [(2, 32, 32, 1), (1, 16, 24, 1)]:
        x = np.random.default_rng(2).uniform(-1100, 500, shape).astype(np.float32)
        assert_allclose(runner.predict(x), keras_model(x, training=False))


def test_errors(tmp_path, bundle_dir):
    with pytest.raises(BundleError, match="Received: path="):
        TFLiteRunner(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(BundleError, match="could not load"):
        TFLiteRunner(tmp_path / "junk.tflite")
    with pytest.raises(ConfigError, match=r"valid names: \['serving_default'\]"):
        TFLiteRunner(bundle_dir / "model.tflite", signature="predict")
    with pytest.raises(ConfigError, match="Received: num_threads=0"):
        TFLiteRunner(bundle_dir / "model.tflite", num_threads=0)
