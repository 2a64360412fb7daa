import numpy as np
import pytest

from serving.errors import DataError
from serving.image import Image


def test_index_physical_round_trip_with_oblique_direction():
    theta = np.deg2rad(20)
    direction = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    image = Image(np.zeros((4, 5, 6)), spacing=(2.5, 0.7, 0.8), origin=(10, -20, 30), direction=direction)
    idx = np.array([[1, 2, 3], [3, 4, 5]], float)
    np.testing.assert_allclose(image.physical_to_index(image.index_to_physical(idx)), idx, atol=1e-9)
    np.testing.assert_allclose(image.affine()[:3, 3], (10, -20, 30))


def test_geometry_validation_names_the_field():
    with pytest.raises(DataError, match="spacing"):
        Image(np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 2.5))
    with pytest.raises(DataError, match="origin"):
        Image(np.zeros((2, 2, 2)), spacing=(1, 1, 1), origin=(0, 0))
    with pytest.raises(DataError, match="array"):
        Image(np.zeros((2,)), spacing=(1,))


def test_metadata_refuses_patient_identifiers():
    with pytest.raises(DataError, match="PatientName"):
        Image(np.zeros((2, 2)), spacing=(1, 1), metadata={"PatientName": "DOE^JOHN"})


def test_channels_are_a_trailing_axis_outside_the_geometry():
    rgb = Image(np.zeros((4, 5, 3), np.uint8), spacing=(0.5, 0.25), channels=3)
    assert (rgb.shape, rgb.ndim, rgb.array.shape) == ((4, 5), 2, (4, 5, 3))
    assert rgb.affine().shape == (3, 3) and rgb.direction.shape == (2, 2)
    # Row 2 is 1.0 mm along P, column 2 is 0.5 mm along L: the channel axis has no position.
    np.testing.assert_allclose(rgb.index_to_physical([2, 2]), [0.5, 1.0])
    volume = Image(np.zeros((2, 4, 5, 4)), spacing=(3, 1, 1), channels=4)
    assert (volume.shape, volume.ndim) == ((2, 4, 5), 3)
    assert volume.describe_channels() == "a 4-channel image"
    # Without `channels` the same array is a volume of 4 slices, so 2 spacings do not fit it.
    with pytest.raises(DataError, match=r"`spacing` must have 3 positive values"):
        Image(np.zeros((4, 5, 3)), spacing=(0.5, 0.25))


@pytest.mark.parametrize(
    "shape, channels, match",
    [
        ((4, 5, 3), 4, r"must be \(y, x, 4\) or \(z, y, x, 4\).*Received: shape=\(4, 5, 3\)"),
        ((4, 3), 3, r"must be \(y, x, 3\).*Received: shape=\(4, 3\)"),
        ((4, 5), 0, r"`channels` must be a positive integer \(1 = grey\)\. Received: channels=0"),
        ((4, 5), 2.0, r"Received: channels=2\.0"),
    ],
)
def test_channels_must_match_the_last_axis(shape, channels, match):
    with pytest.raises(DataError, match=match):
        Image(np.zeros(shape), spacing=(1, 1), channels=channels)


def test_grey_mask_on_an_rgb_grid_and_require_grey():
    rgb = Image(np.zeros((4, 5, 3)), spacing=(0.5, 0.25), metadata={"color_mode": "RGB"}, channels=3)
    mask = rgb.with_array(np.zeros((4, 5), np.uint8))
    assert mask.channels == 1 and mask.same_geometry(rgb) and rgb.same_geometry(mask)
    assert rgb.with_array(np.ones((4, 5, 3))).channels == 3
    mask.require_grey("Anything")
    with pytest.raises(
        DataError,
        match=r"^Step X requires a grey image \(one value per voxel, no channel axis\)\. "
        r"Received: an RGB image \(3 channels\), array shape=\(4, 5, 3\)$",
    ):
        rgb.require_grey("Step X")


def test_assumed_spacing_axes_come_from_metadata():
    assert Image(np.zeros((2, 3, 4)), (1, 1, 1)).assumed_spacing_axes == ()
    assumed = Image(np.zeros((2, 3, 4)), (1, 1, 1), metadata={"spacing_source": "assumed"})
    assert assumed.assumed_spacing_axes == (0, 1, 2)
    partial = Image(np.zeros((2, 3, 4)), (1, 0.5, 0.5),
                    metadata={"spacing_source": "file", "spacing_assumed_axes": [0]})
    assert partial.assumed_spacing_axes == (0,)
