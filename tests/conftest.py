import os

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `make test` runs the suite in several worker processes; on a GPU host each must take GPU memory
# as it needs it, not all of it at start-up (TensorFlow's default), or the second worker has none.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import pytest  # noqa: E402

import kerasmed  # noqa: E402,F401  before any test imports TensorFlow: it sets the oneDNN switch
from tests.helpers import shared_bundle  # noqa: E402


@pytest.fixture(autouse=True)
def float32_tensorflow():
    """TensorFlow with TF32 off during each test, as `export.parity` runs it.

    On Ampere+ GPUs TensorFlow computes float32 convolutions in TF32 (about 1e-3 relative error) by
    default, so Keras outputs compared with a runner at float32 tolerances would differ on a GPU
    host. Nothing changes on a CPU, and TensorFlow is never imported here for tests that do not use
    it (serving must run without it).
    """
    import sys

    if "tensorflow" not in sys.modules:
        yield
        return
    from export.parity import tensorflow_tf32

    with tensorflow_tf32(False):
        yield


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    """One tiny four-format bundle for the whole run; copy it (`copy_bundle`) before changing it."""
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def keras_model(bundle_dir):
    import keras

    return keras.saving.load_model(bundle_dir / "model.keras")
