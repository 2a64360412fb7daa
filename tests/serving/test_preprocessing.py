import dataclasses

import numpy as np
import pytest

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.preprocessing import (
    PreprocessSpec,
    invert,
    plan,
    preprocess,
    resample_array,
    restore_intensity,
)
from tests.helpers import assert_allclose


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


# ---------------------------------------------------------------------------------------------
# Version-2 steps: clip, foreground crop, multiple-of padding, z-score, label maps.


def test_clip_comes_first_and_bounds_the_padding_too():
    vol = np.array([[[-3000.0, -1000.0], [0.0, 3000.0]]], np.float32)  # (1, 2, 2)
    spec = PreprocessSpec((None, None, None), (None, 2, 4), clip=(-1000, 400))
    x, _ = preprocess(Image(vol, (1, 1, 1)), spec)
    # Columns padded 1 each side with pad_value -1024, clipped to -1000.
    np.testing.assert_array_equal(x[0], [[-1000, -1000, -1000, -1000], [-1000, 0, 400, -1000]])


def test_multiple_of_pads_centred_up_to_the_next_multiple():
    vol = _smooth_volume((4, 57, 61))
    spec = PreprocessSpec((None, None, None), (None, None, None), multiple_of=16)
    x, record = preprocess(Image(vol, (2.0, 1.0, 1.0)), spec)
    # 57 -> 64: 4 rows before, 3 after; 61 -> 64: 2 columns before, 1 after (an odd padding
    # puts the extra voxel first, as `size` does); slices left alone.
    assert x.shape == record.output_shape == (4, 64, 64) and record.crop_start == (0, -4, -2)
    np.testing.assert_array_equal(x[:, 4:61, 2:63], vol)
    assert (x[:, :4] == -1024).all() and (x[:, 61:] == -1024).all()
    assert (x[:, :, :2] == -1024).all() and (x[:, :, 63:] == -1024).all()
    np.testing.assert_array_equal(invert(x, record), vol)
    # With `size`: crop or pad to the size first, then pad up to the multiple.
    sized = PreprocessSpec((None, None, None), (None, 50, 70), multiple_of=(None, 16, 7))
    assert preprocess(Image(vol, (2.0, 1.0, 1.0)), sized)[1].output_shape == (4, 64, 70)


def _body(shape=(6, 40, 50), z=(1, 5), y=(8, 30), x=(10, 41)):
    """-1000 HU air with a box of tissue (values 0..99) at [z0:z1, y0:y1, x0:x1]."""
    vol = np.full(shape, -1000.0, np.float32)
    region = tuple(slice(*r) for r in (z, y, x))
    vol[region] = np.arange(np.prod(vol[region].shape)).reshape(vol[region].shape) % 100
    return vol


def test_crop_foreground_keeps_every_slice_by_default_and_hu_exactly():
    vol = _body()
    spec = PreprocessSpec((None, None, None), (None, None, None), crop_foreground=-500,
                          foreground_margin=(None, 2, 1))
    x, record = preprocess(Image(vol, (2.5, 0.8, 0.8)), spec)
    # Rows 8..29 and columns 10..40 above -500 HU, widened by 2 rows and 1 column.
    assert record.box_start == (0, 6, 9) and record.box_shape == (6, 26, 33)
    np.testing.assert_array_equal(x, vol[:, 6:32, 9:42])
    back = invert(x, record, fill=-2048.0)
    np.testing.assert_array_equal(back[:, 6:32, 9:42], vol[:, 6:32, 9:42])
    assert (back[:, :6] == -2048).all() and (back[:, :, 42:] == -2048).all()


def test_crop_foreground_of_an_image_with_nothing_above_the_threshold_keeps_it_whole():
    air = np.full((3, 10, 12), -1000.0, np.float32)
    spec = PreprocessSpec((None, None, None), (None, None, None), crop_foreground=-500)
    x, record = preprocess(Image(air, (1, 1, 1)), spec)
    assert record.box_start == (0, 0, 0) and record.box_shape == (3, 10, 12)
    np.testing.assert_array_equal(x, air)


def test_a_label_map_follows_its_image_record_and_needs_it_with_a_foreground_crop():
    vol = _body()
    labels = (vol > 50).astype(np.uint8)
    spec = PreprocessSpec((None, 0.4, 0.4), (None, None, None), crop_foreground=-500, clip=(0, 60),
                          zscore=True)
    image = Image(vol, (2.5, 0.8, 0.8))
    x, record = preprocess(image, spec)
    with pytest.raises(ConfigError, match=r"must be cropped to its image's foreground box: pass"):
        preprocess(Image(labels, image.spacing), spec, order="nearest")
    y, same = preprocess(Image(labels, image.spacing), spec, order="nearest", record=record)
    assert same == record and y.shape == x.shape and y.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1}  # neither clipped nor z-scored
    np.testing.assert_array_equal(invert(y, record, order="nearest"), labels)
    with pytest.raises(DataError, match=r"Received: image shape=\(6, 40, 49\), record source_shape"):
        preprocess(Image(labels[:, :, :49], image.spacing), spec, order="nearest", record=record)


def test_zscore_uses_the_foreground_statistics_and_is_applied_last():
    vol = np.full((2, 6, 8), -1000.0, np.float32)
    vol[:, 1:5, 2:4], vol[:, 1:5, 4:6] = 10.0, 30.0  # foreground: mean 20, std 10
    spec = PreprocessSpec((None, None, None), (None, 6, 10), crop_foreground=-500, zscore=True,
                          foreground_margin=(None, 0, 0))
    x, record = preprocess(Image(vol, (1, 1, 1)), spec)
    assert record.intensity_mean == pytest.approx((20.0,)) and record.intensity_std == pytest.approx((10.0,))
    # Box: rows 1..4, columns 2..5 -> padded centred to (6, 10): 1 row, 3 columns each side.
    assert record.box_start == (0, 1, 2) and record.crop_start == (0, -1, -3)
    assert_allclose(x[:, 1:5, 3:5], -1.0) and assert_allclose(x[:, 1:5, 5:7], 1.0)
    assert_allclose(x[:, 0], (-1024 - 20) / 10)  # padding: pad_value in HU, then normalised
    assert_allclose(restore_intensity(x, record)[:, 1:5, 3:7], vol[:, 1:5, 2:6], atol=1e-4)
    _, plain = preprocess(Image(vol, (1, 1, 1)), dataclasses.replace(spec, zscore=False))
    with pytest.raises(ConfigError, match=r"the record holds no z-score statistics\. Received: "):
        preprocess(Image(vol, (1, 1, 1)), spec, record=plain)
    # Without a foreground threshold: over every voxel, per channel for a colour image.
    rgb = np.stack([np.arange(12.0).reshape(3, 4), np.full((3, 4), 5.0)], axis=-1)
    x, record = preprocess(Image(rgb, (1, 1), channels=2), PreprocessSpec((None, None), (None, None),
                                                                           zscore=True))
    assert record.intensity_mean == pytest.approx((5.5, 5.0))
    assert record.intensity_std == pytest.approx((np.std(np.arange(12.0)), 1.0))  # constant -> 1
    assert_allclose(x[..., 0], (np.arange(12.0).reshape(3, 4) - 5.5) / np.std(np.arange(12.0)))
    assert_allclose(x[..., 1], 0.0)


def test_cubic_order_from_the_spec_applies_to_images_only():
    vol = _smooth_volume((2, 20, 24))
    spec = PreprocessSpec((None, 0.5, 0.5), (None, None, None), order="cubic")
    x, _ = preprocess(Image(vol, (1.0, 1.0, 1.0)), spec)
    np.testing.assert_array_equal(x, resample_array(vol, (2, 40, 48), order="cubic"))
    assert not np.array_equal(x, resample_array(vol, (2, 40, 48)))  # not the linear result
    labels = (vol > 0.5).astype(np.uint8)
    y, _ = preprocess(Image(labels, (1.0, 1.0, 1.0)), spec, order="nearest")
    np.testing.assert_array_equal(y, resample_array(labels, (2, 40, 48), order="nearest"))
