"""TIFF reader: files written by Pillow and by tifffile, with values and spacing set by hand.

Two independent writers: Pillow (plain and multi-page TIFFs, resolution tags, an ImageJ
description, LZW) and tifffile (16-bit and float colour, planar, BigTIFF, ImageJ hyperstacks,
OME-TIFF). The reader decodes with tifffile.
"""

import struct
import sys

import numpy as np
import PIL.Image
import pytest
import tifffile

from serving.errors import DataError, DependencyError
from serving.io import read_image, read_raster
from serving.io.tiff import read_tiff
from serving.preprocessing import PreprocessSpec, preprocess
from tests.helpers import assert_refused_in_one_line


def _ramp(shape, dtype, scale=1):
    return (np.arange(np.prod(shape)).reshape(shape) * scale % (np.iinfo(dtype).max + 1)).astype(dtype)


def test_16_bit_grey_tiff_is_exact_with_assumed_spacing(tmp_path):
    grey = _ramp((7, 11), np.uint16, scale=853)
    assert grey.max() > 60000
    path = tmp_path / "scan.tif"
    PIL.Image.fromarray(grey).save(path)
    image = read_image(path)
    assert image.array.dtype == np.uint16 and image.array.dtype.isnative
    np.testing.assert_array_equal(image.array, grey)
    assert image.spacing == (1.0, 1.0) and image.metadata["spacing_source"] == "assumed"
    assert image.metadata["format"] == "TIFF"


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
    assert image.metadata["color_mode"] == "RGB"
    # `read_raster`, given a TIFF, hands it to the same reader.
    np.testing.assert_array_equal(read_raster(path).array, stack)


def test_palette_tiff_reads_as_the_colours_it_shows(tmp_path):
    index = np.array([[0, 1], [2, 1]], np.uint8)
    for name, palette in (("colour", [10, 20, 30, 40, 50, 60, 70, 80, 90]),
                          ("grey", [0, 0, 0, 100, 100, 100, 255, 255, 255])):
        im = PIL.Image.fromarray(index, mode="P")
        im.putpalette(palette)
        im.save(tmp_path / f"{name}.tif")  # Pillow stores 8-bit value v as v * 256
    rgb = read_image(tmp_path / "colour.tif")
    assert rgb.channels == 3 and rgb.array.dtype == np.uint8 and rgb.metadata["color_mode"] == "RGB"
    np.testing.assert_array_equal(rgb.array[1, 0], (70, 80, 90))
    np.testing.assert_array_equal(rgb.array[0, 1], (40, 50, 60))
    grey = read_image(tmp_path / "grey.tif")
    assert grey.channels == 1
    np.testing.assert_array_equal(grey.array, [[0, 100], [255, 100]])


def test_tiff_pages_of_different_sizes_are_refused(tmp_path):
    path = tmp_path / "mixed.tif"
    big, small = PIL.Image.new("L", (6, 5)), PIL.Image.new("L", (3, 2))
    big.save(path, save_all=True, append_images=[small])
    # tifffile would take the half-size page for a pyramid level; it is not marked reduced.
    with pytest.raises(DataError, match=r"pages of one size and sample type.*"
                                        r"Received: page 0 \(5, 6\) uint8, page 1 \(2, 3\) uint8$"):
        read_image(path)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_16_bit_and_float_colour_tiff_is_exact(tmp_path, dtype, planarconfig):
    rng = np.random.default_rng(3)
    if dtype == np.uint16:
        rgb = rng.integers(0, 65536, (2, 6, 7, 3), dtype=np.uint16)
        assert rgb.max() > 65000  # values Pillow would have cut to 8 bits
    else:
        rgb = rng.normal(0.0, 1e4, (2, 6, 7, 3)).astype(np.float32)
    path = tmp_path / "rgb.tif"
    data = rgb if planarconfig == "contig" else np.moveaxis(rgb, -1, 1)  # (pages, C, H, W)
    tifffile.imwrite(path, data, photometric="rgb", planarconfig=planarconfig, bigtiff=True)
    image = read_image(path)
    assert (image.shape, image.channels, image.array.dtype) == ((2, 6, 7), 3, dtype)
    np.testing.assert_array_equal(image.array, rgb)  # bit-exact, float included
    assert image.metadata["color_mode"] == "RGB" and image.array.flags.c_contiguous


def test_float64_grey_stack_stays_float64(tmp_path):
    stack = np.linspace(-1e6, 1e6, 3 * 4 * 5).reshape(3, 4, 5)
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    image = read_image(path)
    assert image.array.dtype == np.float64 and image.shape == (3, 4, 5)
    np.testing.assert_array_equal(image.array, stack)


def test_ome_tiff_physical_sizes_give_spacing_in_mm(tmp_path):
    stack = _ramp((4, 2, 9, 12), np.uint16, scale=977)  # (z, C, y, x)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, stack, ome=True, photometric="minisblack", metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "\u00b5m",
        "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "\u00b5m",
        "PhysicalSizeZ": 0.002, "PhysicalSizeZUnit": "mm",
    })
    image = read_image(path)
    assert (image.shape, image.channels) == ((4, 9, 12), 2)
    np.testing.assert_array_equal(image.array, np.moveaxis(stack, 1, -1))
    np.testing.assert_allclose(image.spacing, (2e-3, 5e-4, 2.5e-4), rtol=1e-12)
    assert image.metadata["spacing_source"] == "file" and image.assumed_spacing_axes == ()
    assert "color_mode" not in image.metadata  # channels, not colour samples


def test_ome_tiff_without_physical_sizes_is_assumed(tmp_path):
    path = tmp_path / "plain.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint8), ome=True, metadata={"axes": "ZYX"})
    image = read_image(path)
    assert image.shape == (3, 4, 5) and image.metadata["spacing_source"] == "assumed"


def test_imagej_hyperstack_channels_go_last_and_time_series_are_refused(tmp_path):
    stack = _ramp((3, 2, 4, 5), np.uint8, scale=13)  # (z, C, y, x)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(4.0, 2.0),
                     metadata={"axes": "ZCYX", "unit": "um", "spacing": 1.5})
    image = read_image(path)
    assert (image.shape, image.channels) == ((3, 4, 5), 2)
    np.testing.assert_array_equal(image.array, np.moveaxis(stack, 1, -1))
    np.testing.assert_allclose(image.spacing, (1.5e-3, 0.5e-3, 0.25e-3), rtol=1e-12)
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.zeros((2, 3, 4, 5), np.uint8), imagej=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(DataError, match=r"must be a single time point.*Received: frames=2$"):
        read_image(movie)


def test_more_than_one_stack_axis_is_refused(tmp_path):
    path = tmp_path / "4d.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 4, 5), np.uint8), photometric="minisblack")  # QQYX
    with pytest.raises(DataError, match=r"one stack of pages.*Received: axes 'QQYX', "
                                        r"shape \(2, 3, 4, 5\)$"):
        read_image(path)


@pytest.mark.parametrize("thumbnail", [(3, 4), (5, 5)])  # a pyramid step, and not one
def test_reduced_resolution_pages_are_skipped(tmp_path, thumbnail):
    grey = _ramp((9, 12), np.uint8, scale=3)
    path = tmp_path / "with_thumbnail.tif"
    tifffile.imwrite(path, grey)
    tifffile.imwrite(path, np.full(thumbnail, 255, np.uint8), append=True, subfiletype=1)
    image = read_image(path)
    assert image.shape == (9, 12)
    np.testing.assert_array_equal(image.array, grey)


def test_compression_that_needs_imagecodecs_names_the_package(tmp_path, monkeypatch):
    grey = _ramp((48, 64), np.uint16, scale=37)
    path = tmp_path / "lzw.tif"
    PIL.Image.fromarray(grey).save(path, compression="tiff_lzw")
    with PIL.Image.open(path) as im:  # a valid LZW file: Pillow decodes it
        np.testing.assert_array_equal(np.asarray(im), grey)
    # tifffile as it is without imagecodecs: its own pure-Python codecs (no LZW among them).
    monkeypatch.setattr(tifffile.tifffile, "imagecodecs", tifffile._imagecodecs)
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS",
                        tifffile.tifffile.CompressionCodec(encode=False))
    with pytest.raises(DependencyError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"`{path}` uses the TIFF compression LZW")
    assert "`pip install imagecodecs`" in message and "\n" not in message
    assert isinstance(info.value.__cause__, KeyError)


def _patch(path, at, fmt, value):
    raw = bytearray(path.read_bytes())
    raw[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(raw)


def test_header_asking_for_more_strips_than_the_file_has_is_refused(tmp_path):
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, np.ones((8, 9), np.uint8), compression="zlib", rowsperstrip=8)
    with tifffile.TiffFile(path) as tif:
        at = tif.pages[0].tags[257].valueoffset  # ImageLength, a SHORT stored in the tag
    _patch(path, at, "<H", 800)  # 100 strips of 8 rows needed, 1 stored
    # tifffile alone would hand over (800, 9) with rows 8 to 799 filled with zeros.
    with pytest.raises(DataError, match=r"strips or tiles its image size needs\. "
                                        r"Received: page 0 of shape \(800, 9\) has 1 of 100$"):
        read_image(path)


def test_ome_tiff_missing_pages_it_lists_is_refused(tmp_path):
    path = tmp_path / "cut_chain.ome.tif"
    tifffile.imwrite(path, _ramp((4, 4, 5), np.uint8, scale=3) + 1, ome=True,
                     metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[1]
        next_ifd = page.offset + 2 + 12 * len(page.tags)  # classic TIFF: count, 12-byte tags
    _patch(path, next_ifd, "<I", 0)  # the IFD chain now ends after page 1 of 4
    # tifffile alone would fill pages 2 and 3 with zeros.
    with pytest.raises(DataError, match=r"every page its metadata lists\. Received: 2 of 4 pages$"):
        read_image(path)


@pytest.mark.parametrize("name", ["empty.tif", "cut.tif", "text.tiff", "header_only.tif"])
def test_empty_truncated_or_foreign_files_give_one_line_naming_the_file(tmp_path, name):
    source = tmp_path / "source.tif"
    PIL.Image.fromarray(_ramp((64, 64), np.uint16, scale=37)).save(source)
    path = tmp_path / name
    data = {"empty.tif": b"", "cut.tif": source.read_bytes()[:4000], "text.tiff": b"not an image\n",
            "header_only.tif": source.read_bytes()[:8]}[name]
    path.write_bytes(data)
    assert_refused_in_one_line(lambda: read_image(path), DataError,
                               f"`{path}` must be a complete TIFF image that tifffile can read. ")
    with pytest.raises(DataError, match="must be an existing TIFF file"):
        read_tiff(tmp_path / "gone.tif")


def test_missing_tifffile_names_the_package_to_install(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    PIL.Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import tifffile now fails
    with pytest.raises(DependencyError, match=r"`pip install tifffile`"):
        read_image(path)
