"""PNG and JPEG readers: pixel values against Pillow's own decode or values set by hand.

Real files: matplotlib's sample data (`mpl-data/sample_data/`: `grace_hopper.jpg` RGB JPEG,
`logo2.png` and `Minduka_Present_Blue_Pack.png` RGBA PNGs). The rest is built here with Pillow
from arrays whose values, and whose spacing, the test sets itself. TIFF: `test_tiff.py`.
"""

import re
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
from matplotlib import cbook

from serving.errors import DataError
from serving.inference import predict_image
from serving.io import read_image, read_raster, write_nifti
from serving.io.registry import format_of
from serving.preprocessing import PreprocessSpec
from tests.helpers import assert_refused_in_one_line

SAMPLES = ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")


def _sample(name):
    return cbook.get_sample_data(name, asfileobj=False)


def _ramp(shape, dtype, scale=1):
    return (np.arange(np.prod(shape)).reshape(shape) * scale % (np.iinfo(dtype).max + 1)).astype(dtype)


@pytest.mark.parametrize("name", SAMPLES)
def test_shipped_colour_samples_match_pillow_and_keep_channels_last(name):
    path = _sample(name)
    with PIL.Image.open(path) as im:
        expected, mode = np.asarray(im), im.mode
    image = read_image(path)
    assert image.channels == expected.shape[2] == len(mode)  # "RGB" 3, "RGBA" 4
    assert image.shape == expected.shape[:2] and image.ndim == 2  # never a 3-slice volume
    np.testing.assert_array_equal(image.array, expected)
    assert image.array.dtype == np.uint8
    assert image.metadata["color_mode"] == mode and image.spacing == (1.0, 1.0)
    # Display dots per inch (all three files carry some) are not taken as spacing.
    assert image.metadata["spacing_source"] == "assumed"


def test_rgb_png_is_2d_with_three_channels_not_a_volume(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200  # red plane
    rgb[2, 3] = (1, 2, 3)
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(rgb).save(path)
    image = read_image(path)
    assert (image.shape, image.channels, image.array.shape) == ((5, 7), 3, (5, 7, 3))
    assert image.array[2, 3].tolist() == [1, 2, 3] and image.array[0, 0].tolist() == [200, 0, 0]
    assert len(image.spacing) == len(image.origin) == 2 and image.direction.shape == (2, 2)
    assert image.describe_channels() == "an RGB image (3 channels)"


def test_rgb_image_is_refused_where_grey_is_required(tmp_path):
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    image = read_image(path)
    rule = (r"requires a grey image \(one value per voxel, no channel axis\)\. "
            r"Received: an RGB image \(3 channels\), array shape=\(4, 6, 3\)$")
    out = tmp_path / "x.nii.gz"
    with pytest.raises(DataError, match=rf"^Writing NIfTI `{re.escape(str(out))}` {rule}"):
        write_nifti(image, out)
    assert not out.exists()
    with pytest.raises(DataError, match=rf"^`predict_image` {rule}"):
        predict_image(None, image, PreprocessSpec((None, None), (None, None)))
    # A grey mask predicted on its grid is written fine: `with_array` drops the channel axis.
    mask = image.with_array(np.ones((4, 6), np.uint8))
    assert mask.channels == 1 and mask.same_geometry(image)


@pytest.mark.parametrize("dtype, mode", [(np.uint8, "L"), (np.uint16, "I;16")])
def test_grey_png_8_and_16_bit_values_are_exact(tmp_path, dtype, mode):
    grey = _ramp((6, 9), dtype, scale=1237)  # 16-bit values up to 65535, not only low bytes
    path = tmp_path / "grey.png"
    PIL.Image.fromarray(grey).save(path)
    with PIL.Image.open(path) as im:
        assert im.mode == mode
    image = read_image(path)
    assert image.channels == 1 and image.array.dtype == dtype and image.shape == (6, 9)
    np.testing.assert_array_equal(image.array, grey)


def test_palette_png_reads_as_the_colours_it_shows(tmp_path):
    index = np.array([[0, 1], [2, 1]], np.uint8)
    colour = PIL.Image.fromarray(index, mode="P")
    colour.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    grey = PIL.Image.fromarray(index, mode="P")
    grey.putpalette([0, 0, 0, 100, 100, 100, 255, 255, 255])
    colour.save(tmp_path / "colour.png")
    grey.save(tmp_path / "grey.png")
    rgb = read_image(tmp_path / "colour.png")
    assert rgb.channels == 3
    np.testing.assert_array_equal(rgb.array[1, 0], (70, 80, 90))
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png").array, [[0, 100], [255, 100]])


def _png_16_bit_rgb(path, array):
    """A 16-bit RGB PNG written byte by byte (Pillow cannot write one)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = array.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_colour_is_refused_not_truncated_to_8_bits(tmp_path):
    path = tmp_path / "rgb16.png"
    _png_16_bit_rgb(path, np.full((2, 3, 3), 40000, np.uint16))
    with PIL.Image.open(path) as im:
        assert np.asarray(im).max() < 256  # what Pillow would have handed over
    with pytest.raises(DataError, match=r"more than 8 bits per sample.*Received: page 0, mode RGB, 16 bits"):
        read_image(path)


@pytest.mark.parametrize("name", ["empty.png", "cut.png", "cut.jpg", "text.jpg"])
def test_empty_truncated_or_foreign_files_give_one_line_naming_the_file(tmp_path, name):
    for suffix in (".png", ".jpg"):
        PIL.Image.fromarray(_ramp((64, 64), np.uint8, scale=37)).save(tmp_path / f"source{suffix}")
    path = tmp_path / name
    if name.startswith("cut"):
        data = (tmp_path / f"source{path.suffix}").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"" if name.startswith("empty") else b"not an image\n")
    assert_refused_in_one_line(lambda: read_image(path), DataError,
                               f"`{path}` must be a complete PNG, JPEG or TIFF image")


def test_missing_file_and_suffixes(tmp_path):
    with pytest.raises(DataError, match="must be an existing PNG, JPEG or TIFF file"):
        read_raster(tmp_path / "gone.png")
    for name, fmt in [("a.PNG", "png"), ("a.jpg", "jpeg"), ("a.JPEG", "jpeg"), ("a.tif", "tiff"),
                      ("a.tiff", "tiff")]:
        (tmp_path / name).write_bytes(b"")
        assert format_of(tmp_path / name) == fmt


def test_sidecar_and_argument_spacing_win_over_assumed(tmp_path):
    path = tmp_path / "slide.png"
    PIL.Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    assert read_image(path, spacing=(0.5, 0.25)).metadata["spacing_source"] == "argument"
    (tmp_path / "slide.json").write_text('{"spacing": [0.008, 0.004], "modality": "SM"}')
    image = read_image(path)
    assert image.spacing == (0.008, 0.004) and image.modality == "SM"
    assert image.metadata["spacing_source"] == "sidecar"
    assert read_image(path, spacing=(0.5, 0.25)).spacing == (0.5, 0.25)


def test_missing_pillow_names_the_package_to_install(tmp_path, monkeypatch):
    import sys

    from serving.errors import DependencyError

    path = tmp_path / "a.png"
    PIL.Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # import PIL.Image now fails
    with pytest.raises(DependencyError, match=r"`pip install pillow`"):
        read_image(path)
