import os

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests.helpers import shared_bundle  # noqa: E402


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    """One tiny four-format bundle for the whole run; copy it (`copy_bundle`) before changing it."""
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def keras_model(bundle_dir):
    import keras

    return keras.saving.load_model(bundle_dir / "model.keras")
