"""kerasmed.keras_runner.KerasRunner: the reference runner, from a file or from memory."""

import numpy as np
import pytest

from kerasmed.keras_runner import KerasRunner
from serving.errors import BundleError
from serving.runners import TensorSpec, make_runner
from tests.helpers import assert_allclose, tiny_unet


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


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="Received: path="):
        KerasRunner(tmp_path / "nope.keras")
