"""Colour DICOM (secondary captures, ultrasound, palette images) against pydicom's shipped files:
RGB values with a trailing channel axis, computed here from pydicom's stored values by hand."""

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from serving.errors import DataError
from serving.io import read_image
from tests.serving.io.dicom_builders import _shipped


@pytest.mark.parametrize("name, spacing", [
    ("SC_rgb_small_odd.dcm", (33.333333, 33.333333)),
    ("SC_rgb_small_odd_big_endian.dcm", (33.333333, 33.333333)),
    ("examples_rgb_color.dcm", None),  # ultrasound without PixelSpacing
    ("SC_rgb_rle_16bit.dcm", (1.0, 1.0)),  # RLE, 16 bits per sample
])
def test_rgb_files_are_2d_with_three_channels_exactly_as_stored(name, spacing):
    ds = pydicom.dcmread(_shipped(name))
    image = read_image(_shipped(name))
    assert image.channels == 3 and image.ndim == 2 and image.shape == (ds.Rows, ds.Columns)
    np.testing.assert_array_equal(image.array, ds.pixel_array)  # RGB: no conversion, no LUT
    assert image.array.dtype == ds.pixel_array.dtype and image.metadata["color_mode"] == "RGB"
    if spacing is None:
        assert image.metadata["spacing_source"] == "assumed" and image.spacing == (1.0, 1.0)
    else:
        np.testing.assert_allclose(image.spacing, spacing, atol=1e-6)


def test_ybr_full_422_is_converted_to_rgb_by_the_standards_formula():
    """PS3.3 C.7.6.3.1.2: R = Y + 1.402 (Cr - 128), G = Y - 0.344136 (Cb - 128) - 0.714136
    (Cr - 128), B = Y + 1.772 (Cb - 128), for 8-bit YBR_FULL."""
    path = _shipped("SC_ybr_full_422_uncompressed.dcm")
    ybr = pixel_array(pydicom.dcmread(path), as_rgb=False).astype(np.float64)
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128, ybr[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    image = read_image(path)
    assert image.channels == 3 and image.array.dtype == np.uint8
    # 1 grey level: the conversion rounds (and clips to 0..255).
    np.testing.assert_allclose(image.array, np.clip(rgb, 0, 255), atol=1.0)
    assert any("YBR_FULL_422 shown as RGB" in n for n in image.metadata["notes"])


def test_palette_colour_indices_are_looked_up_in_the_files_palette():
    path = _shipped("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    index = ds.pixel_array.astype(np.int64)
    planes = []
    for colour in ("Red", "Green", "Blue"):
        entries, first, bits = ds[f"{colour}PaletteColorLookupTableDescriptor"].value
        lut = np.frombuffer(ds[f"{colour}PaletteColorLookupTableData"].value,
                            dtype="<u2" if bits == 16 else "u1")
        planes.append(lut[np.clip(index - first, 0, len(lut) - 1)])
    image = read_image(path)
    assert image.channels == 3 and image.shape == index.shape
    np.testing.assert_array_equal(image.array, np.stack(planes, axis=-1))


def test_multi_frame_colour_is_a_stack_of_frames_without_geometry():
    path = _shipped("SC_rgb_rle_2frame.dcm")
    image = read_image(path)
    assert image.array.shape == (2, 100, 100, 3) and image.channels == 3 and image.ndim == 3
    np.testing.assert_array_equal(image.array, pydicom.dcmread(path).pixel_array)
    assert image.assumed_spacing_axes == (0,)
    assert any("2 colour frames stacked on axis 0" in n for n in image.metadata["notes"])


def test_colour_where_grey_is_required_is_refused_naming_the_file():
    image = read_image(_shipped("SC_rgb_small_odd.dcm"))
    with pytest.raises(DataError, match=r"requires a grey image.*Received: an RGB image \(3 channels\)"):
        image.require_grey("The slice cache (`SC_rgb_small_odd.dcm`)")
