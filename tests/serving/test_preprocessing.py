import numpy as np
import pytest

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.preprocessing import PreprocessSpec, invert, plan, preprocess, resample_array


def _smooth_volume(shape=(6, 50, 60)):
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (np.sin(y / 9.0) + np.cos(x / 11.0) + 0.1 * z).astype(np.float32)


def test_plan_resamples_to_target_spacing_and_crops_centred():
    record = plan((10, 100, 80), (2.5, 0.75, 0.75), PreprocessSpec((None, 1.5, 1.5), (None, 40, 48)))
    assert record.resampled_shape == (10, 50, 40)
    assert record.output_shape == (10, 40, 48)
    assert record.crop_start == (0, 5, -4)  # crop 5 rows each side, pad 4 columns each side
    np.testing.assert_allclose(record.output_spacing, (2.5, 1.5, 1.5))


def test_preprocess_pads_with_air_and_keeps_centre_values():
    image = Image(np.full((2, 8, 8), 40.0, np.float32), spacing=(2.0, 1.0, 1.0))
    x, _ = preprocess(image, PreprocessSpec((None, None, None), (None, 12, 6)))
    assert x.shape == (2, 12, 6)
    assert np.all(x[:, :2] == -1024.0) and np.all(x[:, -2:] == -1024.0)
    assert np.all(x[:, 2:10] == 40.0)


def test_invert_round_trip_identity_grid_is_exact():
    vol = _smooth_volume()
    image = Image(vol, spacing=(2.5, 1.0, 1.0))
    x, record = preprocess(image, PreprocessSpec((None, None, None), (None, 64, 64)))
    np.testing.assert_array_equal(invert(x, record), vol)


def test_invert_round_trip_after_resampling_is_close_for_smooth_images():
    vol = _smooth_volume()
    image = Image(vol, spacing=(2.5, 1.3, 1.3))
    x, record = preprocess(image, PreprocessSpec((None, 1.0, 1.0), (None, 80, 80)))
    back = invert(x, record)
    assert back.shape == vol.shape
    # Linear interpolation there and back on a field with ~10-voxel wavelength.
    assert np.abs(back - vol).max() < 0.03


def test_label_maps_round_trip_exactly_with_nearest():
    vol = (_smooth_volume() > 0.8).astype(np.uint8)
    image = Image(vol, spacing=(2.5, 1.2, 1.2))
    spec = PreprocessSpec((None, 0.6, 0.6), (None, 128, 128))  # exact factor 2
    y, record = preprocess(image, spec, order="nearest")
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(invert(y, record, order="nearest"), vol)


def test_invert_keeps_channel_axes_and_fills_cropped_area():
    image = Image(np.zeros((3, 40, 40), np.float32), spacing=(1.0, 1.0, 1.0))
    x, record = preprocess(image, PreprocessSpec((None, None, None), (None, 20, 20)))
    probs = np.ones(x.shape + (2,), np.float32)
    back = invert(probs, record, fill=0.0)
    assert back.shape == (3, 40, 40, 2)
    assert back[:, 10:30, 10:30].min() == 1.0 and back[:, :10].max() == 0.0


def test_resample_array_preserves_constant_and_mean():
    a = np.full((7, 9), 3.5, np.float32)
    np.testing.assert_allclose(resample_array(a, (14, 5)), 3.5)


def _resample_linear_reference(array, out_shape):
    """The textbook expression `take(lo) * (1 - w) + take(hi) * w`, one axis at a time."""
    out = np.asarray(array).astype(np.float32, copy=False)
    for axis, (n, m) in enumerate(zip(out.shape, out_shape)):
        if n == m:
            continue
        coords = np.clip((np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5, 0.0, n - 1)
        lo = np.floor(coords).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        shape = [1] * out.ndim
        shape[axis] = m
        w = (coords - lo).astype(np.float32).reshape(shape)
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


@pytest.mark.parametrize(
    "shape, out_shape", [((6, 50, 60), (6, 71, 45)), ((1, 4, 9, 9), (1, 4, 5, 13)), ((5,), (5,))]
)
def test_resample_array_linear_is_bit_identical_to_the_textbook_expression(shape, out_shape):
    source = np.random.default_rng(0).uniform(-1000, 400, shape)  # float64: cast first
    out = resample_array(source, out_shape)
    assert out.dtype == np.float32 and out.shape == out_shape
    np.testing.assert_array_equal(out, _resample_linear_reference(source, out_shape))
    assert source.dtype == np.float64  # the input is left alone


def test_resample_array_does_not_modify_its_input():
    source = _smooth_volume()
    before = source.copy()
    resample_array(source, (6, 64, 32))
    np.testing.assert_array_equal(source, before)


@pytest.mark.parametrize("order", ["linear", "nearest"])
def test_nan_input_is_rejected_with_count(order):
    vol = np.zeros((2, 8, 8), np.float32)
    vol[0, 0, :3] = np.nan
    vol[1, 1, 1] = -np.inf
    with pytest.raises(
        DataError,
        match=r"^`image` must be finite\. Received: 3 NaN and 1 inf values in a \(2, 8, 8\) "
        r"float32 array$",
    ):
        preprocess(Image(vol, (1, 1, 1)), PreprocessSpec((None, 1, 1), (None, 8, 8)), order)


@pytest.mark.parametrize("pad_value", [float("nan"), float("inf"), -np.inf, "air", None])
def test_non_finite_pad_value_is_refused(pad_value):
    # NaN padding reached the model wherever a case was padded, and it trained all-NaN.
    with pytest.raises(ConfigError, match=r"`pad_value` must be a finite number\. Received: pad_value="):
        PreprocessSpec((None, 1.0, 1.0), (None, 8, 8), pad_value)


def test_bad_spec_and_rank_mismatch_name_the_argument():
    with pytest.raises(ConfigError, match="target_spacing"):
        PreprocessSpec((None, -1.0, 1.0), (None, 8, 8))
    with pytest.raises(ConfigError, match="size"):
        PreprocessSpec((None, 1.0, 1.0), (None, 0, 8))
    with pytest.raises(DataError, match="axes"):
        plan((8, 8), (1.0, 1.0), PreprocessSpec((None, 1, 1), (None, 8, 8)))


def test_spec_dict_round_trip():
    spec = PreprocessSpec((None, 1.5, 1.5), (None, 240, 240), -1000.0)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_rgb_image_is_resampled_on_spatial_axes_with_channels_intact():
    grey = _smooth_volume((1, 30, 40))[0]
    planes = np.stack([grey, 2 * grey + 1, -grey], axis=-1)  # three different channels
    rgb = Image(planes, spacing=(0.8, 0.8), channels=3)
    spec = PreprocessSpec((0.5, 0.5), (40, 40))
    x, record = preprocess(rgb, spec)
    assert x.shape == (40, 40, 3) and record.output_shape == (40, 40)
    # Each channel comes out exactly as that plane would alone, as a grey image.
    for c in range(3):
        alone, _ = preprocess(Image(planes[..., c], spacing=(0.8, 0.8)), spec)
        np.testing.assert_array_equal(x[..., c], alone)
    assert invert(x, record).shape == (30, 40, 3)
    labels = Image((planes > 0).astype(np.uint8), spacing=(0.8, 0.8), channels=3)
    y, _ = preprocess(labels, spec, order="nearest")
    assert y.shape == (40, 40, 3) and y.dtype == np.uint8


def test_assumed_spacing_is_not_resampled_as_millimetres():
    vol = _smooth_volume((3, 10, 12))
    assumed = Image(vol, (1, 1, 1), metadata={"spacing_source": "assumed"})
    with pytest.raises(DataError) as info:
        preprocess(assumed, PreprocessSpec((None, 1.0, 1.0), (None, 8, 8)))
    assert "spacing of axes [1, 2] is unknown" in str(info.value) and "\n" not in str(info.value)
    x, _ = preprocess(assumed, PreprocessSpec((None, None, None), (None, 8, 8)))
    assert x.shape == (3, 8, 8)
    # Slice spacing unknown, pixel spacing known: in-plane resampling is fine.
    partial = Image(vol, (1, 0.5, 0.5), metadata={"spacing_source": "file", "spacing_assumed_axes": [0]})
    assert preprocess(partial, PreprocessSpec((None, 1.0, 1.0), (None, None, None)))[0].shape == (3, 5, 6)
    with pytest.raises(DataError, match=r"axes \[0\] is unknown.*spacing=\(1\.0, 0\.5, 0\.5\) \(file\)"):
        preprocess(partial, PreprocessSpec((2.0, None, None), (None, None, None)))
