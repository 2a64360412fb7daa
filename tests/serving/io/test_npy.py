"""`.npy`/`.npz` readers: geometry from an argument, a sidecar JSON or the archive, else assumed."""

import json

import numpy as np
import pytest

from serving.errors import DataError
from serving.io import read_image, read_npy, read_npz
from serving.preprocessing import PreprocessSpec, preprocess

SPEC = PreprocessSpec((None, 1.5, 1.5), (None, None, None))


def _volume():
    return np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8) - 100


def test_npy_without_spacing_is_read_but_not_resampled_as_millimetres(tmp_path):
    path = tmp_path / "ct.npy"
    np.save(path, _volume())
    image = read_image(path)
    assert image.spacing == (1.0, 1.0, 1.0) and image.metadata["spacing_source"] == "assumed"
    with pytest.raises(DataError) as info:
        preprocess(image, SPEC)
    message = str(info.value)
    assert "\n" not in message and "spacing of axes [1, 2] is unknown" in message
    assert "sidecar JSON" in message and "`spacing` argument" in message
    assert message.endswith("Received: spacing=(1.0, 1.0, 1.0) (assumed), target_spacing=(None, 1.5, 1.5)")
    # Keeping the source spacing (crop/pad only) needs no millimetres and still works.
    x, _ = preprocess(image, PreprocessSpec((None, None, None), (None, 4, 4)))
    np.testing.assert_array_equal(x, _volume()[:, 1:5, 2:6])


@pytest.mark.parametrize("name", ["ct.npy.json", "ct.json"])
def test_npy_sidecar_gives_spacing_origin_and_direction(tmp_path, name):
    path = tmp_path / "ct.npy"
    np.save(path, _volume())
    direction = [[0, 0, 1], [0, -1, 0], [1, 0, 0]]
    (tmp_path / name).write_text(json.dumps(
        {"spacing": [2.5, 0.75, 0.75], "origin": [1, 2, 3], "direction": direction, "note": "x"}))
    image = read_image(path)
    assert image.spacing == (2.5, 0.75, 0.75) and image.origin == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(image.direction, direction)
    assert image.metadata == {"spacing_source": "sidecar"}
    x, record = preprocess(image, SPEC)
    assert record.resampled_shape == (4, 3, 4)
    # The argument wins over the sidecar.
    assert read_npy(path, spacing=(3, 2, 1)).spacing == (3.0, 2.0, 1.0)


def test_bad_sidecars_name_the_file(tmp_path):
    path = tmp_path / "ct.npy"
    np.save(path, _volume())
    side = tmp_path / "ct.json"
    side.write_text("{not json")
    with pytest.raises(DataError, match=rf"^Sidecar `{side}` must be a readable JSON file"):
        read_image(path)
    side.write_text('{"pixel_spacing": [1, 1, 1]}')
    with pytest.raises(DataError, match=r"with a `spacing` list.*Received: \['pixel_spacing'\]"):
        read_image(path)
    side.write_text('{"spacing": [1, 1]}')
    with pytest.raises(DataError, match=rf"`spacing` in sidecar `{side}` must have 3 positive values"):
        read_image(path)
    with pytest.raises(DataError, match=r"^`spacing` must have 3 positive values\. Received: \(1, 0, 1\)"):
        read_npy(path, spacing=(1, 0, 1))


def test_npz_named_or_only_array_with_stored_spacing(tmp_path):
    volume = _volume()
    np.savez_compressed(tmp_path / "case.npz", image=volume, mask=volume > 0, spacing=[2.0, 0.5, 0.5])
    image = read_image(tmp_path / "case.npz")
    np.testing.assert_array_equal(image.array, volume)
    assert image.spacing == (2.0, 0.5, 0.5) and image.metadata["spacing_source"] == "file"
    mask = read_npz(tmp_path / "case.npz", key="mask")
    assert mask.array.dtype == bool and mask.spacing == (2.0, 0.5, 0.5)
    np.savez(tmp_path / "only.npz", scan=volume)
    only = read_image(tmp_path / "only.npz")
    np.testing.assert_array_equal(only.array, volume)
    assert only.metadata["spacing_source"] == "assumed"
    (tmp_path / "only.json").write_text('{"spacing": [3, 1, 1]}')
    assert read_image(tmp_path / "only.npz").spacing == (3.0, 1.0, 1.0)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"one named `image`.*Received: key=None, arrays=\['a', 'b'\]"):
        read_image(tmp_path / "two.npz")
    with pytest.raises(DataError, match=r"Received: key='c'"):
        read_npz(tmp_path / "two.npz", key="c")
    np.savez(tmp_path / "obj.npz", image=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"complete \.npz archive.*object arrays are refused"):
        read_image(tmp_path / "obj.npz")
    data = (tmp_path / "two.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.npz` must be a complete \.npz archive"):
        read_image(tmp_path / "cut.npz")
    np.save(tmp_path / "plain.npy", np.zeros((2, 2)))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(DataError, match=r"must be a \.npz archive.*Received: one \.npy array"):
        read_image(tmp_path / "plain.npz")
    np.savez(tmp_path / "badspacing.npz", image=np.zeros((2, 2)), spacing=[1.0, -1.0])
    with pytest.raises(DataError, match=r"`spacing` recorded in .*badspacing\.npz` must have 2 positive"):
        read_image(tmp_path / "badspacing.npz")


def test_npy_channels_argument_declares_a_trailing_channel_axis(tmp_path):
    rgb = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    path = tmp_path / "rgb.npy"
    np.save(path, rgb)
    assert read_image(path).shape == (5, 6, 3)  # an array alone is grey: here 5 slices
    image = read_image(path, channels=3, spacing=(0.5, 0.5))
    assert (image.shape, image.channels, image.spacing) == ((5, 6), 3, (0.5, 0.5))
    with pytest.raises(DataError, match=r"must hold a \(y, x, 4\) or \(z, y, x, 4\) numeric array"):
        read_image(path, channels=4)
