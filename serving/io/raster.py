"""Read PNG and JPEG files as `Image`s, through Pillow (TIFF files go to `serving.io.tiff`).

Pixel values are exactly what Pillow decodes (`np.asarray(PIL.Image.open(path))`), in the file's
own dtype: uint8, uint16 (16-bit grey), int32, float32, or bool for 1-bit files. Grey files give a
grey image `(y, x)`. Colour files keep their channels on a trailing axis, `(y, x, C)` with
`channels=C` and Pillow's mode in `metadata["color_mode"]` ("RGB", "RGBA", "LA", "CMYK"); see
`serving.image` for the channel convention. A palette image becomes the colours it shows (grey
when its palette is grey). Pillow reduces 16-bit colour to 8 bits, so such a file is refused
rather than read inexactly. EXIF orientation is not applied: rows are as stored. An animated
file gives its first frame.

Spacing comes from the `spacing` argument, else a sidecar JSON (see `serving.io.sidecar`), else
1.0 per axis, recorded as assumed (`metadata["spacing_source"]`), which
`serving.preprocessing.preprocess` refuses to resample by. PNG and JPEG dots per inch are display
hints (72 or 96 from most software) and are not taken as spacing. No text chunk or tag is copied
into `metadata` (they may name the patient).

Pillow is imported on first use, so `serving` imports without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from serving.errors import DataError
from serving.image import Image
from serving.io.sidecar import resolve_geometry
from serving.io.tiff import read_tiff
from serving.lazy_import import lazy_import

# Modes whose arrays hold the file's samples exactly even when they are wider than 8 bits.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Classic and BigTIFF headers, little and big endian: such a file is read by `read_tiff`.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _pillow():
    return lazy_import("PIL.Image", pip_name="pillow", purpose="read PNG and JPEG files")


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _stored_bits(im) -> int:
    """Bits per sample as stored in the file (Pillow's raw decoder mode says it)."""
    tile = im.tile[0][3] if im.tile else ""  # (codec, extents, offset, args)
    rawmode = tile if isinstance(tile, str) else (tile[0] if tile else "")
    return 16 if isinstance(rawmode, str) and ";16" in rawmode else 8


def _frame_array(im, path: Path) -> tuple[np.ndarray, str]:
    """The first frame's samples and its colour mode, refusing a lossy decode."""
    bits = _stored_bits(im)
    if bits > 8 and im.mode not in _WIDE_MODES:
        raise DataError(
            f"`{path}` must be grey if it has more than 8 bits per sample: Pillow reduces "
            f"{bits}-bit colour to 8 bits (save it as a 16-bit TIFF, one 16-bit grey file per "
            f"channel, or .npy). Received: page 0, mode {im.mode}, {bits} bits per sample"
        )
    if im.mode in ("P", "PA"):
        palette = np.asarray(im.getpalette() or [0, 0, 0]).reshape(-1, 3)
        grey = bool(np.all(palette == palette[:, :1]))
        alpha = im.mode == "PA" or "transparency" in im.info
        im = im.convert(("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB"))
    array = np.array(im)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return array, im.mode


def read_raster(path: str | os.PathLike, spacing=None, origin=None, direction=None) -> Image:
    """Read a PNG or JPEG file (8/16-bit grey, 8-bit colour) as an `Image`; TIFF via `read_tiff`.

    Args:
        path: the image file (any format Pillow opens; the registry sends `.png`, `.jpg` and
            `.jpeg` here). A TIFF file (by its header) is read by `serving.io.tiff.read_tiff`.
        spacing: mm per spatial axis, `(y, x)`; else the sidecar JSON; else 1.0, recorded as
            assumed.
        origin: LPS mm of the first pixel; else from the sidecar; else 0.
        direction: `(2, 2)` direction cosines; else from the sidecar; else axial.

    Returns:
        An `Image` `(y, x)` or `(y, x, C)`, modality "OT" unless the sidecar names one;
        `metadata` holds "format" (Pillow's, e.g. "PNG"), "spacing_source" and, for colour,
        "color_mode".

    Raises:
        DataError: if the file is missing, empty, truncated or not an image Pillow reads (one
            line naming the file), or holds 16-bit colour.
        DependencyError: if Pillow is not installed.

    Example:
        >>> photo = read_raster("slide.png", spacing=(0.5, 0.5))     # (H, W, 3), channels=3
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"`path` must be an existing PNG, JPEG or TIFF file. Received: path={str(path)!r}"
        )
    with open(path, "rb") as f:
        if f.read(4) in _TIFF_MAGIC:
            return read_tiff(path, spacing, origin, direction)
    pil = _pillow()
    try:
        with pil.open(path) as im:
            fmt = im.format
            array, mode = _frame_array(im, path)
    except DataError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for a bad file
        raise DataError(
            f"`{path}` must be a complete PNG, JPEG or TIFF image that Pillow can read. "
            f"Received: {_one_line(err)}"
        ) from err
    channels = array.shape[-1] if array.ndim == 3 else 1
    geometry = resolve_geometry(path, 2, spacing, origin, direction)
    geometry["metadata"]["format"] = fmt
    if channels > 1:
        geometry["metadata"]["color_mode"] = mode
    return Image(array=array, channels=channels, **geometry)
