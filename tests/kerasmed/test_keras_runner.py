"""kerasmed.keras_runner.KerasRunner: the reference runner, from a file or from memory."""

import numpy as np
import pytest

from kerasmed.keras_runner import KerasRunner
from serving.errors import BundleError, DataError
from serving.runners import TensorSpec, make_runner
from tests.helpers import assert_allclose, bad_input, tiny_unet


def test_file_and_memory_runners_agree(tmp_path):
    model = tiny_unet()
    model.save(tmp_path / "model.keras")
    from_file = make_runner("keras", tmp_path / "model.keras")
    in_memory = KerasRunner(model)
    assert from_file.input_specs == [TensorSpec("image", (None, None, None, 1), "float32")]
    assert from_file.output_specs == [TensorSpec("probs", (None, None, None, 1), "float32")]
    x = np.random.default_rng(0).uniform(-1100, 500, (2, 16, 24, 1)).astype(np.float32)
    out = from_file.run({"image": x})["probs"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 16, 24, 1)
    assert_allclose(out, in_memory.predict(x))
    assert "Keras" in in_memory.provider


@pytest.mark.parametrize("case", ["nan", "+inf", "string"])
@pytest.mark.parametrize("compiled", [True, False])
def test_refuses_non_finite_and_non_real_inputs(case, compiled):
    # KerasRunner inherits `Runner.run`, so the reference is held to the same input check.
    runner = KerasRunner(tiny_unet(), compiled=compiled)
    x, received = bad_input(case, (1, 16, 16, 1))
    with pytest.raises(DataError, match="^Input `image` " + received + "$"):
        runner.predict(x)


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="Received: path="):
        KerasRunner(tmp_path / "nope.keras")


def test_graph_call_matches_eager_call_and_traces_once():
    model = tiny_unet(seed=3)
    graph, eager = KerasRunner(model), KerasRunner(model, compiled=False)
    assert graph.compiled and not eager.compiled
    assert graph.provider.endswith("(tensorflow backend, tf.function)")
    assert eager.provider.endswith("(tensorflow backend, eager)")
    rng = np.random.default_rng(1)
    # New batch sizes and image sizes reuse the one trace: its signature leaves them open.
    for shape in [(8, 32, 32, 1), (3, 32, 32, 1), (1, 16, 24, 1), (8, 32, 32, 1)]:
        x = rng.uniform(-1100, 500, shape).astype(np.float32)
        out = graph.predict(x)
        assert out.dtype == np.float32 and out.shape == shape
        # Graph and eager execution differ only by float rounding.
        assert_allclose(out, eager.predict(x), atol=1e-6)
        assert_allclose(out, model(x, training=False), atol=1e-6)
    assert graph._forward.experimental_get_tracing_count() == 1


def test_graph_call_runs_in_inference_mode():
    # Dropout is active only with training=True: the compiled call must leave it off.
    import keras

    inputs = keras.Input((None, None, 1), name="image")
    outputs = keras.layers.Activation("sigmoid", name="probs")(keras.layers.Dropout(0.9)(inputs))
    runner = KerasRunner(keras.Model(inputs, outputs))
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype(np.float32)
    assert_allclose(runner.predict(x), 1 / (1 + np.exp(-x)), atol=1e-6)


def test_multi_input_and_dict_output_models_run_compiled():
    import keras

    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], {"sum": keras.layers.Add(name="sum")([a, b])})
    runner = KerasRunner(model)
    x, y = np.ones((2, 4), np.float32), np.full((2, 4), 2.0, np.float32)
    assert_allclose(runner.run({"a": x, "b": y})["sum"], x + y)


def test_truncated_model_file_is_a_bundle_error_naming_it(tmp_path):
    # Keras reports a cut archive as "File not found", for a file that exists.
    tiny_unet().save(tmp_path / "model.keras")
    data = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.keras` must be a readable \.keras archive \(a zip "
                       r"file\); it is truncated or corrupt\. Received: a \d+-byte file"):
        KerasRunner(tmp_path / "model.keras")
