"""PNG, JPEG and TIFF readers: pixel values against Pillow's own decode or values set by hand.

Real files: matplotlib's sample data (`mpl-data/sample_data/`: `grace_hopper.jpg` RGB JPEG,
`logo2.png` and `Minduka_Present_Blue_Pack.png` RGBA PNGs; it ships no TIFF). The rest is built
here with Pillow from arrays whose values, and whose spacing, the test sets itself.
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
from serving.preprocessing import PreprocessSpec, preprocess

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


def test_16_bit_grey_tiff_is_exact_with_assumed_spacing(tmp_path):
    grey = _ramp((7, 11), np.uint16, scale=853)
    assert grey.max() > 60000
    path = tmp_path / "scan.tif"
    PIL.Image.fromarray(grey).save(path)
    image = read_image(path)
    assert image.array.dtype == np.uint16 and image.array.dtype.isnative
    np.testing.assert_array_equal(image.array, grey)
    assert image.spacing == (1.0, 1.0) and image.metadata["spacing_source"] == "assumed"


@pytest.mark.parametrize(
    "unit, x_res, y_res, spacing_yx",
    [
        (3, 40.0, 20.0, (10 / 20, 10 / 40)),  # pixels per cm: 0.5 mm rows, 0.25 mm columns
        (2, 254.0, 127.0, (25.4 / 127, 25.4 / 254)),  # pixels per inch: 0.2 mm, 0.1 mm
    ],
)
def test_multipage_tiff_is_a_stack_with_spacing_from_resolution_tags(
    tmp_path, unit, x_res, y_res, spacing_yx
):
    stack = _ramp((3, 5, 6), np.uint16, scale=2003)
    pages = [PIL.Image.fromarray(page) for page in stack]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution_unit=unit,
                  x_resolution=x_res, y_resolution=y_res)
    image = read_image(path)
    assert image.shape == (3, 5, 6) and image.channels == 1
    np.testing.assert_array_equal(image.array, stack)
    np.testing.assert_allclose(image.spacing, (1.0,) + spacing_yx, rtol=1e-12)
    # TIFF has no slice-spacing tag: axis 0 is assumed, rows and columns are known.
    assert image.metadata["spacing_source"] == "file" and image.assumed_spacing_axes == (0,)
    x, record = preprocess(image, PreprocessSpec((None, 0.05, 0.05), (None, None, None)))
    assert x.shape[0] == 3 and record.output_spacing[1:] == pytest.approx((0.05, 0.05), rel=0.05)
    with pytest.raises(DataError, match=r"spacing of axes \[0\] is unknown"):
        preprocess(image, PreprocessSpec((2.0, None, None), (None, None, None)))


def test_imagej_tiff_gives_pixel_and_slice_spacing_in_its_unit(tmp_path):
    stack = _ramp((4, 3, 5), np.uint8, scale=7)
    pages = [PIL.Image.fromarray(page) for page in stack]
    path = tmp_path / "cells.tif"
    description = "ImageJ=1.54f\nimages=4\nslices=4\nunit=micron\nspacing=2.5\nloop=false\n"
    # ImageJ writes resolution in pixels per `unit`, with ResolutionUnit "none" (1).
    pages[0].save(path, save_all=True, append_images=pages[1:], description=description,
                  resolution_unit=1, x_resolution=4.0, y_resolution=2.0)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, stack)
    np.testing.assert_allclose(image.spacing, (2.5e-3, 0.5e-3, 0.25e-3), rtol=1e-12)
    assert image.metadata["spacing_source"] == "file" and image.assumed_spacing_axes == ()


def test_resolution_unit_none_is_not_a_length(tmp_path):
    path = tmp_path / "pixels.tif"
    PIL.Image.fromarray(np.zeros((3, 3), np.uint8)).save(
        path, resolution_unit=1, x_resolution=72.0, y_resolution=72.0)
    assert read_image(path).metadata["spacing_source"] == "assumed"


def test_rgb_tiff_stack_keeps_channels_last(tmp_path):
    stack = _ramp((2, 4, 5, 3), np.uint8, scale=11)
    pages = [PIL.Image.fromarray(page) for page in stack]
    path = tmp_path / "rgb.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    image = read_image(path)
    assert (image.shape, image.channels) == ((2, 4, 5), 3)
    np.testing.assert_array_equal(image.array, stack)


def test_tiff_pages_of_different_sizes_are_refused(tmp_path):
    path = tmp_path / "mixed.tif"
    big, small = PIL.Image.new("L", (6, 5)), PIL.Image.new("L", (3, 2))
    big.save(path, save_all=True, append_images=[small])
    with pytest.raises(DataError, match=r"pages of one size and mode.*page 0 \(5, 6\) L, page 1 \(2, 3\) L"):
        read_image(path)


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


@pytest.mark.parametrize("name", ["empty.png", "empty.tif", "cut.png", "cut.tif", "text.jpg"])
def test_empty_truncated_or_foreign_files_give_one_line_naming_the_file(tmp_path, name):
    source = tmp_path / "source.png"
    PIL.Image.fromarray(_ramp((64, 64), np.uint8, scale=37)).save(source)
    PIL.Image.fromarray(_ramp((64, 64), np.uint16, scale=37)).save(tmp_path / "source.tif")
    path = tmp_path / name
    if name.startswith("cut"):
        data = (tmp_path / f"source{path.suffix}").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"" if name.startswith("empty") else b"not an image\n")
    with pytest.raises(DataError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"`{path}` must be a complete PNG, JPEG or TIFF image")
    assert "Received: " in message


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
