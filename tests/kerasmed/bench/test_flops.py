import keras
import pytest

from kerasmed.bench.flops import forward_flops, training_flops
from kerasmed.models.unet import unet2d
from serving.errors import ConfigError


def test_conv_flops_counted_by_hand():
    # conv 3x3, 2 -> 4 channels on 8x8 'same': 64 sites * 9 * 2 * 4 MACs; transpose 2x2 stride 2,
    # 4 -> 3 channels from 8x8: 64 input sites * 4 * 4 * 3 MACs. 2 FLOPs per MAC.
    x = keras.Input((8, 8, 2))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    y = keras.layers.Conv2DTranspose(3, 2, strides=2)(y)
    model = keras.Model(x, y)
    expected = 2 * (64 * 9 * 2 * 4 + 64 * 4 * 4 * 3)
    assert forward_flops(model) == expected
    assert training_flops(model) == 3 * expected


def test_unet_flops_scale_with_area_and_filters():
    small = forward_flops(unet2d(input_shape=(32, 32, 5), filters=8, depth=3))
    assert forward_flops(unet2d(input_shape=(64, 64, 5), filters=8, depth=3)) == 4 * small
    # Doubling every width roughly quadruples the work (the first conv's input stays at 5 channels).
    ratio = forward_flops(unet2d(input_shape=(32, 32, 5), filters=16, depth=3)) / small
    assert 3.8 < ratio < 4.0


def test_dynamic_spatial_shape_is_refused():
    with pytest.raises(ConfigError, match="concrete input shape"):
        forward_flops(unet2d(input_shape=(None, None, 1), filters=4, depth=1))
