import numpy as np
import pytest

from serving.errors import DataError
from serving.image import Image, axial_direction


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


def _positions_and_values(image: Image):
    """LPS position (mm) and value of every voxel, sorted by position, to compare two layouts."""
    index = np.indices(image.shape).reshape(image.ndim, -1).T
    points = image.index_to_physical(index)
    values = image.array.reshape(len(points), -1)
    order = np.lexsort(np.round(points, 3).T[::-1])
    return points[order], values[order]


@pytest.mark.parametrize("axes,flips", [((0, 1, 2), (1,)), ((2, 0, 1), ()), ((1, 2, 0), (0, 2)),
                                        ((2, 1, 0), (0, 1, 2))])
@pytest.mark.parametrize("channels", [1, 3])
def test_reoriented_undoes_any_permutation_and_flip_exactly(axes, flips, channels):
    rng = np.random.default_rng(3)
    shape = (4, 5, 6) + ((channels,) if channels > 1 else ())
    axial = Image(rng.integers(-1000, 1000, shape).astype(np.int16), spacing=(2.5, 0.7, 0.9),
                  origin=(-10.0, 20.0, 30.0), channels=channels)
    # The same voxels stored in another order: flip, then permute, with the geometry to match.
    array = np.flip(axial.array, axis=flips) if flips else axial.array
    array = np.transpose(array, list(axes) + list(range(3, array.ndim)))
    first = [axial.shape[a] - 1 if a in flips else 0 for a in range(3)]
    signs = [-1.0 if a in flips else 1.0 for a in axes]
    stored = Image(array, spacing=tuple(axial.spacing[a] for a in axes),
                   origin=tuple(axial.index_to_physical(first)),
                   direction=axial.direction[:, list(axes)] * signs, channels=channels)

    back = stored.reoriented()

    np.testing.assert_array_equal(back.array, axial.array)
    assert back.array.dtype == np.int16 and back.channels == channels
    np.testing.assert_allclose(back.spacing, axial.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, axial.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, axial.direction, atol=1e-12)
    for a, b in zip(_positions_and_values(stored), _positions_and_values(back)):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_reoriented_keeps_an_oblique_grid_and_every_voxel_in_place():
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    # Columns: axis 0 along about -L, axis 1 along about +S, axis 2 along about -P.
    direction = rotation @ np.array([[-1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    image = Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), spacing=(1.0, 2.0, 3.0),
                  origin=(5.0, -7.0, 11.0), direction=direction,
                  metadata={"spacing_assumed_axes": [1]})
    back = image.reoriented()
    # The closest axial order: axis 0 is the old axis 1 (S), axis 1 the old axis 2 (P), axis 2
    # the old axis 0 (L, flipped), with their spacings.
    assert back.shape == (4, 5, 3) and back.spacing == (2.0, 3.0, 1.0)
    assert back.metadata["spacing_assumed_axes"] == [0]
    cosines = np.diag(axial_direction().T @ back.direction)  # per axis, against S, P, L
    np.testing.assert_allclose(cosines, [1.0, np.cos(angle), np.cos(angle)], atol=1e-12)
    for a, b in zip(_positions_and_values(image), _positions_and_values(back)):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert back.reoriented() is back


def test_reoriented_2d_image():
    image = Image(np.arange(6).reshape(2, 3), spacing=(0.5, 0.25),
                  direction=np.array([[0.0, -1.0], [1.0, 0.0]]))
    back = image.reoriented()
    np.testing.assert_allclose(back.direction, np.eye(2)[::-1], atol=1e-12)
    for a, b in zip(_positions_and_values(image), _positions_and_values(back)):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_a_2d_image_as_a_volume_keeps_its_positions():
    image = Image(np.arange(12.0).reshape(3, 4), spacing=(0.5, 0.7), origin=(10.0, -4.0),
                  direction=np.array([[0.0, 1.0], [1.0, 0.0]]))
    volume = image.as_volume()
    assert volume.shape == (1, 3, 4) and volume.spacing == (1.0, 0.5, 0.7)
    for y, x in [(0, 0), (2, 3), (1, 2)]:
        np.testing.assert_allclose(volume.index_to_physical([0, y, x])[:2],
                                   image.index_to_physical([y, x]), atol=1e-12)
        assert volume.array[0, y, x] == image.array[y, x]
    assert volume.as_volume() is volume
    colour = Image(np.zeros((3, 4, 3)), spacing=(1.0, 1.0), channels=3).as_volume()
    assert colour.shape == (1, 3, 4) and colour.channels == 3
