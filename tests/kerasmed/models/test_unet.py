import numpy as np
import pytest

from kerasmed.models.registry import build_model
from kerasmed.models.unet import unet2d
from serving.errors import ConfigError


@pytest.mark.parametrize("num_classes,activation_sum", [(1, None), (3, 1.0)])
def test_unet_shapes_and_output_range(num_classes, activation_sum):
    model = unet2d(num_classes=num_classes, filters=4, depth=2)
    x = np.random.default_rng(0).uniform(-1000, 400, (2, 32, 48, 1)).astype(np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 32, 48, num_classes)
    assert y.min() >= 0.0 and y.max() <= 1.0
    if activation_sum:
        np.testing.assert_allclose(y.sum(-1), activation_sum, atol=1e-5)
    assert model.input.name == "image" and model.layers[1].name == "hu_window"


@pytest.mark.parametrize("normalization", ["batch", "group", "none"])
def test_normalisation_choices_build(normalization):
    model = unet2d(filters=8, depth=1, normalization=normalization)
    assert model.output_shape == (None, None, None, 1)


def test_registry_and_bad_arguments_list_valid_choices():
    with pytest.raises(ConfigError, match="valid names"):
        build_model("vnet")
    with pytest.raises(ConfigError, match="normalization"):
        unet2d(normalization="layer")
    with pytest.raises(ConfigError, match="spatial_dims"):
        unet2d(spatial_dims=3)
