import pytest

from kerasmed.config import config_from_dict
from kerasmed.training.inputs import cache_for
from serving.errors import ConfigError
from tests.kerasmed.data.test_cache import _dataset


def _config(root, size):
    return config_from_dict({
        "data": {"root": str(root)},
        "preprocessing": {"target_spacing": [None, None, None], "size": size},
    })


def test_slices_the_data_sizes_must_fit_the_model(tmp_path):
    # `preprocessing.size` null for y/x: the 20 x 20 source slices reach the U-Net as they are,
    # which cannot halve them 3 times. Refused once the cache shows the size, before training.
    _dataset(tmp_path)
    with pytest.raises(ConfigError, match=r"multiples of 2\*\*model\.depth = 8 on each side.*"
                       r"Received: 20x20 slices from case c0 .*preprocessing\.size=\[None, None, None\]"):
        cache_for(_config(tmp_path, [None, None, None]), progress=False)
    assert (cache_for(_config(tmp_path, [None, 16, 16]), progress=False) / "index.csv").is_file()
