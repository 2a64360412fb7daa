"""PNG and TIFF readers against scikit-image's shipped sample images and tifffile-written files.

The expected values come from readers and writers independent of ours (Pillow for PNG, tifffile
for TIFF): scikit-image's `io.imread` (imageio for PNG, tifffile for TIFF) and tifffile's writer.
"""

from pathlib import Path

import numpy as np
import pytest
import skimage
import skimage.io
import tifffile

from serving.errors import DataError
from serving.io import read_image

SAMPLES = Path(skimage.__file__).parent / "data"


@pytest.mark.parametrize("name, channels", [
    ("astronaut.png", 3),  # RGB photograph
    ("ihc.png", 3),  # immunohistochemistry microscopy, RGB
    ("camera.png", 1),  # 8-bit grey
])
def test_skimage_png_samples_match_an_independent_decoder(name, channels):
    expected = skimage.io.imread(SAMPLES / name)
    image = read_image(SAMPLES / name)
    assert image.channels == channels and image.ndim == 2  # an RGB PNG is never 3 slices
    assert image.array.shape == expected.shape
    np.testing.assert_array_equal(image.array, expected)


def test_skimage_16_bit_rgb_png_is_refused_not_cut_to_8_bits():
    # chessboard_RGB.png is 16-bit RGB (IHDR bit depth 16); Pillow, and so imageio, hand over
    # 8 bits per sample.
    assert skimage.io.imread(SAMPLES / "chessboard_RGB.png").dtype == np.uint8
    with pytest.raises(DataError, match=r"more than 8 bits per sample.*"
                                        r"Received: page 0, mode RGB, 16 bits per sample$"):
        read_image(SAMPLES / "chessboard_RGB.png")


@pytest.mark.parametrize("name, shape, channels, dtype", [
    ("multipage.tif", (2, 15, 10), 1, np.uint8),
    # float64 RGB, planar configuration "separate": (2 pages, 3 planes, 10, 10) in the file.
    ("multipage_rgb.tif", (2, 10, 10, 3), 3, np.float64),
])
def test_skimage_multipage_tiffs_are_stacks(name, shape, channels, dtype):
    expected = skimage.io.imread(SAMPLES / name)  # tifffile: every page, (pages, H, W[, C])
    image = read_image(SAMPLES / name)
    assert image.ndim == 3 and image.channels == channels
    assert image.array.shape == expected.shape == shape and image.array.dtype == dtype
    np.testing.assert_array_equal(image.array, expected)


def test_16_bit_tiff_written_by_tifffile_is_exact_with_its_resolution(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 65536, (3, 9, 12), dtype=np.uint16)
    path = tmp_path / "scan.tif"
    # 50 and 25 pixels per centimetre: 0.2 mm rows, 0.4 mm columns (TIFF stores X, then Y).
    tifffile.imwrite(path, stack, photometric="minisblack", resolution=(25.0, 50.0),
                     resolutionunit="CENTIMETER")
    image = read_image(path)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, stack)
    np.testing.assert_allclose(image.spacing[1:], (0.2, 0.4), rtol=1e-9)
    assert image.assumed_spacing_axes == (0,)  # no TIFF tag gives the page spacing
