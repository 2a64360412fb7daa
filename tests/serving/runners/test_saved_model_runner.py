"""SavedModelRunner on the tiny U-Net's SavedModel export, against the Keras model."""

import numpy as np
import pytest

from serving.errors import BundleError, ConfigError
from serving.runners import TensorSpec, make_runner
from tests.helpers import assert_allclose


def test_specs_and_outputs_match_keras(bundle_dir):
    import keras

    runner = make_runner("saved_model", bundle_dir / "saved_model")
    assert runner.format == "saved_model"
    assert runner.input_specs == [TensorSpec("image", (None, None, None, 1), "float32")]
    assert runner.output_specs == [TensorSpec("probs", (None, None, None, 1), "float32")]
    import tensorflow as tf

    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    # The conftest turns TF32 off around every test, as parity does.
    device = "GPU (tf32 off)" if on_gpu else "CPU (fp32)"
    assert runner.provider == f"TensorFlow {tf.__version__} {device}"
    model = keras.saving.load_model(bundle_dir / "model.keras")
    for shape in [(2, 32, 48, 1), (1, 16, 16, 1)]:
        x = np.random.default_rng(0).uniform(-1100, 500, shape).astype(np.float32)
        out = runner.run({"image": x})
        assert isinstance(out["probs"], np.ndarray) and out["probs"].shape == shape
        assert_allclose(out["probs"], model(x, training=False))


def test_errors(tmp_path, bundle_dir):
    from serving.runners.saved_model_runner import SavedModelRunner

    with pytest.raises(BundleError, match="saved_model.pb"):
        SavedModelRunner(tmp_path)
    with pytest.raises(ConfigError, match=r"valid names: \['serving_default'\]"):
        SavedModelRunner(bundle_dir / "saved_model", signature="predict")


class _FakeTF:
    """Just enough of `tensorflow` for `tensorflow_precision`, with a GPU present or absent."""

    def __init__(self, gpus, tf32):
        experimental = type("experimental", (), {
            "tensor_float_32_execution_enabled": staticmethod(lambda: tf32),
        })
        self.config = type("config", (), {
            "list_logical_devices": staticmethod(lambda kind: ["/GPU:0"] * gpus),
            "experimental": experimental,
        })


@pytest.mark.parametrize(
    "gpus, tf32, expected",
    [(0, True, "CPU (fp32)"), (1, True, "GPU (tf32 on)"), (1, False, "GPU (tf32 off)")],
)
def test_precision_mode_with_and_without_a_gpu(gpus, tf32, expected):
    from serving.runners.saved_model_runner import tensorflow_precision

    assert tensorflow_precision(_FakeTF(gpus, tf32)) == expected
