"""Read PNG, JPEG and TIFF files as `Image`s, through Pillow.

Pixel values are exactly what Pillow decodes (`np.asarray(PIL.Image.open(path))`), in the file's
own dtype: uint8, uint16 (16-bit grey), int32, float32, or bool for 1-bit files. Grey files give a
grey image `(y, x)`. Colour files keep their channels on a trailing axis, `(y, x, C)` with
`channels=C` and Pillow's mode in `metadata["color_mode"]` ("RGB", "RGBA", "LA", "CMYK"); see
`serving.image` for the channel convention. A palette image becomes the colours it shows (grey
when its palette is grey). Pillow reduces 16-bit colour to 8 bits, so such a file is refused
rather than read inexactly. EXIF orientation is not applied: rows are as stored.

A TIFF with several pages is a stack `(z, y, x)` (or `(z, y, x, C)`), pages in file order;
reduced-resolution pages (thumbnails, NewSubfileType bit 0) are skipped. An ImageJ hyperstack
with several channels becomes `(z, y, x, C)`; one with several time points is refused. PNG and
JPEG give their first frame.

Spacing comes from the `spacing` argument, else a sidecar JSON (see `serving.io.sidecar`), else
the TIFF's tags: XResolution/YResolution in pixels per ResolutionUnit (inch = 25.4 mm,
centimetre = 10 mm; inch when the unit tag is absent, as TIFF 6.0 says; "none" is no length), or
ImageJ's description (`unit=` for the pixel size, `spacing=` between slices). TIFF has no tag for
the slice spacing of a plain stack, so that axis is assumed. An axis no source gives is 1.0 and
recorded as assumed (`metadata["spacing_source"]`, `metadata["spacing_assumed_axes"]`), which
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
from serving.lazy_import import lazy_import

# TIFF ResolutionUnit -> millimetres per unit (1 = no absolute unit).
_TIFF_UNIT_MM = {2: 25.4, 3: 10.0}
# ImageJ's `unit=` values -> millimetres per unit.
_IMAGEJ_UNIT_MM = {
    "nm": 1e-6, "nanometer": 1e-6, "micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\u00b5m": 1e-3,
    "\\u00b5m": 1e-3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1e3,
    "meter": 1e3, "inch": 25.4, "in": 25.4,
}
# Modes whose arrays hold the file's samples exactly even when they are wider than 8 bits.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_TAGS = {"bits": 258, "description": 270, "x_res": 282, "y_res": 283, "unit": 296, "subfile": 254}


def _pillow():
    return lazy_import("PIL.Image", pip_name="pillow", purpose="read PNG, JPEG and TIFF files")


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _stored_bits(im) -> int:
    """Bits per sample as stored in the file (before Pillow decodes the current frame)."""
    tags = getattr(im, "tag_v2", None)
    if tags is not None and _TAGS["bits"] in tags:
        return max(int(b) for b in np.atleast_1d(tags[_TAGS["bits"]]))
    tile = im.tile[0][3] if im.tile else ""  # (codec, extents, offset, args)
    rawmode = tile if isinstance(tile, str) else (tile[0] if tile else "")
    return 16 if isinstance(rawmode, str) and ";16" in rawmode else 8


def _frame_array(im, path: Path, page: int) -> tuple[np.ndarray, str]:
    """The current frame's samples and its colour mode, refusing a lossy decode."""
    bits = _stored_bits(im)
    if bits > 8 and im.mode not in _WIDE_MODES:
        raise DataError(
            f"`{path}` must be grey if it has more than 8 bits per sample: Pillow reduces "
            f"{bits}-bit colour to 8 bits (save it as one 16-bit grey file per channel, or .npy). "
            f"Received: page {page}, mode {im.mode}, {bits} bits per sample"
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


def _imagej(description) -> dict[str, str]:
    """ImageJ's `key=value` description lines, or {} for another description."""
    if not isinstance(description, str) or not description.startswith("ImageJ="):
        return {}
    pairs = (line.split("=", 1) for line in description.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _tiff_spacing(tags, imagej: dict[str, str], ndim: int) -> list[float | None]:
    """Spacing (mm) per spatial axis from TIFF resolution tags or ImageJ, None where unknown."""
    mm = _IMAGEJ_UNIT_MM.get(imagej.get("unit", "").lower())
    if mm is None:
        mm = _TIFF_UNIT_MM.get(int(tags.get(_TAGS["unit"], 2)))
    pixel: list[float | None] = [None, None]
    if mm is not None:
        for i, tag in enumerate((_TAGS["y_res"], _TAGS["x_res"])):
            per_unit = float(tags.get(tag, 0) or 0)  # IFDRational: nan for 0/0
            if np.isfinite(per_unit) and per_unit > 0:
                pixel[i] = mm / per_unit
    if ndim == 2:
        return pixel
    try:
        slice_mm = float(imagej["spacing"]) * mm if mm is not None else None
    except (KeyError, ValueError):
        slice_mm = None
    return [slice_mm if slice_mm and slice_mm > 0 else None] + pixel


def read_raster(path: str | os.PathLike, spacing=None, origin=None, direction=None) -> Image:
    """Read a PNG, JPEG or TIFF file (8/16-bit, grey or colour, multi-page TIFF) as an `Image`.

    Args:
        path: the image file (any format Pillow opens; the registry sends `.png`, `.jpg`,
            `.jpeg`, `.tif` and `.tiff` here).
        spacing: mm per spatial axis, `(y, x)` or `(z, y, x)`; else the sidecar JSON; else the
            TIFF tags; else 1.0, recorded as assumed.
        origin: LPS mm of the first pixel; else from the sidecar; else 0.
        direction: `(ndim, ndim)` direction cosines; else from the sidecar; else axial.

    Returns:
        An `Image` `(y, x)`, `(y, x, C)`, `(z, y, x)` or `(z, y, x, C)`, modality "OT" unless the
        sidecar names one; `metadata` holds "format" (Pillow's, e.g. "PNG"), "spacing_source" and,
        for colour, "color_mode".

    Raises:
        DataError: if the file is missing, empty, truncated or not an image Pillow reads (one
            line naming the file), holds 16-bit colour, its pages differ in size or mode, or it
            is an ImageJ time series.
        DependencyError: if Pillow is not installed.

    Example:
        >>> photo = read_raster("slide.png", spacing=(0.5, 0.5))     # (H, W, 3), channels=3
    """
    pil = _pillow()
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"`path` must be an existing PNG, JPEG or TIFF file. Received: path={str(path)!r}"
        )
    try:
        with pil.open(path) as im:
            fmt = im.format
            n_frames = getattr(im, "n_frames", 1) if fmt == "TIFF" else 1
            pages, tags = [], None
            for page in range(n_frames):
                im.seek(page)
                page_tags = getattr(im, "tag_v2", {})
                if pages and int(page_tags.get(_TAGS["subfile"], 0)) & 1:
                    continue  # a reduced-resolution copy (thumbnail) of a page already read
                tags = page_tags if tags is None else tags
                pages.append((page,) + _frame_array(im, path, page))
    except DataError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for a bad file
        raise DataError(
            f"`{path}` must be a complete PNG, JPEG or TIFF image that Pillow can read. "
            f"Received: {_one_line(err)}"
        ) from err
    first_page, first, mode = pages[0]
    for page, array, page_mode in pages[1:]:
        if array.shape != first.shape or page_mode != mode:
            raise DataError(
                f"`{path}` must have pages of one size and mode to be read as a stack. Received: "
                f"page {first_page} {first.shape} {mode}, page {page} {array.shape} {page_mode}"
            )
    array = np.stack([a for _, a, _ in pages]) if len(pages) > 1 else first
    imagej = _imagej(tags.get(_TAGS["description"]) if tags else None)
    channels = first.shape[-1] if first.ndim == 3 else 1
    n_channels, n_times = int(imagej.get("channels", 1) or 1), int(imagej.get("frames", 1) or 1)
    if n_times > 1:
        raise DataError(
            f"`{path}` must be a single time point; ImageJ time series are not read. "
            f"Received: frames={n_times}"
        )
    if n_channels > 1 and channels == 1:
        if len(pages) % n_channels:
            raise DataError(
                f"`{path}` must hold whole ImageJ channel groups. Received: {len(pages)} pages "
                f"for channels={n_channels}"
            )
        # ImageJ stores a hyperstack's channels as consecutive pages (c fastest).
        array = np.moveaxis(array.reshape((-1, n_channels) + first.shape), 1, -1)
        array, channels = (array[0] if array.shape[0] == 1 else array), n_channels
    ndim = array.ndim - (channels > 1)
    recorded = {"spacing": _tiff_spacing(tags, imagej, ndim)} if fmt == "TIFF" and tags else None
    geometry = resolve_geometry(path, ndim, spacing, origin, direction, recorded)
    geometry["metadata"]["format"] = fmt
    if channels > 1 and n_channels == 1:
        geometry["metadata"]["color_mode"] = mode
    return Image(array=array, channels=channels, **geometry)
