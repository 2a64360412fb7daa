"""Read TIFF files (plain, multi-page, ImageJ, OME-TIFF, BigTIFF) as `Image`s, through tifffile.

Pixel values are exactly what the file stores, in its own dtype: bool (1-bit), uint8/16/32,
int8/16/32, float16/32/64; 16-bit and float colour included (MinIsWhite grey is not inverted).
tifffile finds the image's layout (its first series: a plain page, consecutive pages of one
shape, an ImageJ hyperstack, an OME-TIFF image), and its axes are mapped to the `Image`
convention (see `serving.image`):

- rows and columns `(y, x)`; a stack of pages (a depth axis, or pages without one) first,
  `(z, y, x)`;
- samples per pixel (RGB, RGBA, CMYK; planar-separate pages `(C, H, W)` too) or ImageJ/OME
  channels last, `(..., y, x, C)` with `channels=C`, and for samples the photometric name in
  `metadata["color_mode"]` ("RGB", "RGBA", "LA", "CMYK");
- a palette image becomes the colours it shows (grey when its palette is grey), as PNG does;
- an axis of length 1 is dropped. A file with several time points, several stack or channel
  axes, or another axis (angle, lambda, tile...) is refused, as is one with several images of
  different sizes or types. Reduced-resolution copies (thumbnails, pyramid levels) are skipped.

Spacing comes from the `spacing` argument, else a sidecar JSON (see `serving.io.sidecar`), else
the file: OME `PhysicalSizeX/Y/Z` in their units; ImageJ's description (`unit=` for the pixel
size, `spacing=` between slices); XResolution/YResolution in pixels per ResolutionUnit (inch =
25.4 mm, centimetre = 10 mm; inch when the unit tag is absent, as TIFF 6.0 says; "none" is no
length). A plain TIFF has no tag for the slice spacing, so that axis is assumed. An axis no
source gives is 1.0 and recorded as assumed (`metadata["spacing_source"]`,
`metadata["spacing_assumed_axes"]`), which `serving.preprocessing.preprocess` refuses to resample
by. No description, tag or OME text is copied into `metadata` (they may name the patient).

Deflate, PackBits, LZMA and Zstandard decode as is; LZW, JPEG, JPEG 2000, WebP, CCITT and the
floating-point predictor need the optional `imagecodecs` package, and without it such a file is
refused naming the compression. tifffile is imported on first use, so `serving` imports without
it.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from serving.errors import DataError, DependencyError
from serving.image import Image
from serving.io.sidecar import resolve_geometry
from serving.lazy_import import lazy_import

# TIFF ResolutionUnit -> millimetres per unit (1 = no absolute unit).
_RESOLUTION_UNIT_MM = {2: 25.4, 3: 10.0}
# ImageJ `unit=` (lower-cased) and OME `PhysicalSize*Unit` values -> millimetres per unit.
_UNIT_MM = {
    "pm": 1e-9, "nm": 1e-6, "nanometer": 1e-6, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "um": 1e-3,
    "\\u00b5m": 1e-3, "micron": 1e-3, "microns": 1e-3, "mm": 1.0, "millimeter": 1.0, "cm": 10.0,
    "centimeter": 10.0, "m": 1e3, "meter": 1e3, "in": 25.4, "inch": 25.4,
}
# tifffile's axis letters: pages of a stack (depth, image sequence, unknown) and channels
# (samples per pixel, channels); anything else but rows, columns and time is refused.
_STACK_AXES, _CHANNEL_AXES = "ZIQ", "SC"
# PhotometricInterpretation -> (colour mode, samples); one more sample is alpha.
_PHOTOMETRIC_MODE = {0: ("L", 1), 1: ("L", 1), 2: ("RGB", 3), 5: ("CMYK", 4)}


def _tifffile():
    return lazy_import("tifffile", purpose="read TIFF files")


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _check_codecs(tifffile, keyframe, path: Path) -> None:
    """Refuse a page whose compression or predictor tifffile cannot decode."""
    for kind, table, value in (("compression", tifffile.TIFF.DECOMPRESSORS, keyframe.compression),
                               ("predictor", tifffile.TIFF.UNPREDICTORS, keyframe.predictor)):
        if value == 1:  # none
            continue
        try:
            table[value]
        except KeyError as err:
            name = getattr(value, "name", value)
            if "imagecodecs" in str(err):
                raise DependencyError(
                    f"`{path}` uses the TIFF {kind} {name}, which tifffile decodes only with the "
                    f"optional `imagecodecs` package: `pip install imagecodecs`. "
                    f"Received: {_one_line(err)}"
                ) from err
            raise DataError(
                f"`{path}` must use a TIFF {kind} that tifffile decodes. Received: {kind} {name}"
            ) from err


def _check_pages(tifffile, series, path: Path) -> None:
    """Refuse, before decoding, what tifffile would not decode or would fill with zeros: a codec
    it lacks, a page the ImageJ/OME metadata lists but the file lacks, or a page with fewer
    strips or tiles than its size needs (a damaged header)."""
    pages = list(series.pages)
    if None in pages:
        raise DataError(
            f"`{path}` must hold every page its metadata lists. "
            f"Received: {len(pages) - pages.count(None)} of {len(pages)} pages"
        )
    for keyframe in {page.keyframe for page in pages}:
        _check_codecs(tifffile, keyframe, path)
    for page in pages:
        keyframe, counts = page.keyframe, page.databytecounts
        needed = int(np.prod(keyframe.chunked))
        # An uncompressed image may lie in one strip whatever RowsPerStrip says.
        whole = keyframe.compression == 1 and len(counts) == 1 and counts[0] >= keyframe.nbytes
        if len(counts) < needed and not whole:
            raise DataError(
                f"`{path}` must have the strips or tiles its image size needs. Received: page "
                f"{page.index} of shape {keyframe.shape} has {len(counts)} of {needed}"
            )


def _main_series(tif, path: Path):
    """The file's one image (first series, full resolution), refusing images of other sizes."""
    # Index the whole IFD chain first: tifffile detects a circular chain (a damaged next-IFD
    # offset) when it indexes all pages at once, not when `series` walks them one by one.
    len(tif.pages)
    series = [s for s in tif.series if not s.keyframe.is_reduced] or list(tif.series)
    if not series:
        raise DataError(
            f"`{path}` must be a complete TIFF image that tifffile can read. Received: no page"
        )
    # tifffile groups pages by shape and type, and takes smaller ones for pyramid levels; only
    # pages marked reduced (or SubIFDs) really are copies of the image at a lower resolution.
    others = series[1:] + [
        level for level in series[0].levels[1:]
        if not (level.keyframe.is_reduced or level.keyframe.is_subifd)
    ]
    if others:
        a, b = series[0].keyframe, others[0].keyframe
        raise DataError(
            f"`{path}` must have pages of one size and sample type to be read as a stack. "
            f"Received: page {a.index} {a.shape} {a.dtype}, page {b.index} {b.shape} {b.dtype}"
        )
    return series[0]


def _to_image_axes(array: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, int, str]:
    """`array` with tifffile `axes` as `([z,] y, x[, C])`, its channel count and channel axis."""
    if array.size == 0:
        raise DataError(f"`{path}` must have at least one pixel. Received: shape {array.shape}")
    keep = [i for i, a in enumerate(axes) if array.shape[i] > 1 or a in "YX"]
    shape = tuple(array.shape[i] for i in keep)
    array, axes = array.reshape(shape), "".join(axes[i] for i in keep)
    if "T" in axes:
        raise DataError(
            f"`{path}` must be a single time point; TIFF time series are not read. "
            f"Received: frames={array.shape[axes.index('T')]}"
        )
    stack = [a for a in axes if a in _STACK_AXES]
    channel = [a for a in axes if a in _CHANNEL_AXES]
    if len(stack) > 1 or len(channel) > 1 or len(stack) + len(channel) + 2 != len(axes):
        raise DataError(
            f"`{path}` must be one image or one stack of pages, with at most one channel axis "
            f"(tifffile axes Z/I/Q pages, Y rows, X columns, S/C channels). "
            f"Received: axes {axes!r}, shape {shape}"
        )
    order = [axes.index(a) for a in stack + ["Y", "X"] + channel]
    channels = shape[axes.index(channel[0])] if channel else 1
    return np.ascontiguousarray(array.transpose(order)), channels, "".join(channel)


def _mm(value, mm_per_unit) -> float | None:
    """`value` units in mm, or None if either is absent or not a number, or it is not > 0."""
    try:
        out = float(value) * mm_per_unit
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None


def _ome_spacing(xml) -> dict[str, float]:
    """mm per axis letter from the first OME image's `PhysicalSize{X,Y,Z}` (default unit µm)."""
    try:
        pixels = ElementTree.fromstring(xml).find("{*}Image/{*}Pixels")
    except (ElementTree.ParseError, TypeError, ValueError):  # not OME: other sources decide
        return {}
    sizes = {} if pixels is None else {
        axis: _mm(pixels.get(f"PhysicalSize{axis}"),
                  _UNIT_MM.get(pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m")))
        for axis in "ZYX"
    }
    return {axis: size for axis, size in sizes.items() if size is not None}


def _units_per_pixel(value) -> float | None:
    """A resolution tag, pixels per unit as RATIONAL `(numerator, denominator)`, inverted."""
    try:
        numerator, denominator = value
        return denominator / numerator
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _spacing(tif, series, ndim: int) -> list[float | None]:
    """Spacing (mm) per spatial axis from OME, ImageJ or resolution tags, None where unknown."""
    tags = series.keyframe.tags
    imagej = tif.imagej_metadata or {}
    ome = _ome_spacing(tif.ome_metadata) if series.kind == "ome" else {}
    mm = _UNIT_MM.get(str(imagej.get("unit", "")).lower())
    if mm is None:
        try:
            mm = _RESOLUTION_UNIT_MM.get(int(tags.valueof(296, 2)))
        except (TypeError, ValueError):  # a damaged unit tag: no length
            mm = None
    pixel = [ome.get(axis, _mm(_units_per_pixel(tags.valueof(tag)), mm))
             for axis, tag in (("Y", 283), ("X", 282))]
    if ndim == 2:
        return pixel
    return [ome.get("Z", _mm(imagej.get("spacing"), mm))] + pixel


def _palette_colours(array: np.ndarray, colormap, path: Path) -> np.ndarray:
    """Palette indices `(...)` as the colours they show, `(..., 3)`, or grey `(...)` for a grey
    palette: uint8 when every 16-bit colormap entry is an 8-bit value `v` written as `v * 256`
    or `v * 257` (writers do either), else the uint16 entries."""
    shape = getattr(colormap, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != 3 or array.max(initial=0) >= shape[1]:
        raise DataError(
            f"`{path}` must have a (3, N) colormap that covers every palette index. "
            f"Received: colormap shape {shape}, largest index {array.max(initial=0)}"
        )
    low, high = colormap & 255, colormap >> 8
    if np.all((low == 0) | (low == high)):
        colormap = high.astype(np.uint8)
    colours = colormap.T[array]
    return colours[..., 0] if np.all(colormap == colormap[:1]) else colours


def read_tiff(path: str | os.PathLike, spacing=None, origin=None, direction=None) -> Image:
    """Read a TIFF file (8/16/32-bit or float, grey or colour, stack, ImageJ, OME) as an `Image`.

    Args:
        path: the `.tif`/`.tiff` file (BigTIFF too).
        spacing: mm per spatial axis, `(y, x)` or `(z, y, x)`; else the sidecar JSON; else the
            file's OME, ImageJ or resolution tags; else 1.0, recorded as assumed.
        origin: LPS mm of the first pixel; else from the sidecar; else 0.
        direction: `(ndim, ndim)` direction cosines; else from the sidecar; else axial.

    Returns:
        An `Image` `(y, x)`, `(y, x, C)`, `(z, y, x)` or `(z, y, x, C)`, modality "OT" unless the
        sidecar names one; `metadata` holds "format" ("TIFF"), "spacing_source" and, for
        colour samples, "color_mode".

    Raises:
        DataError: if the file is missing, empty, truncated or not a TIFF (one line naming the
            file), holds images of different sizes or types, a time series, or axes that are
            not one image or stack.
        DependencyError: if tifffile is not installed, or the file's compression needs
            `imagecodecs` and it is not installed.

    Example:
        >>> cells = read_tiff("cells.ome.tif")   # (z, y, x, C), spacing from PhysicalSize*
    """
    tifffile = _tifffile()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`path` must be an existing TIFF file. Received: path={str(path)!r}")
    try:
        with tifffile.TiffFile(path) as tif:
            series = _main_series(tif, path)
            _check_pages(tifffile, series, path)
            array, axes = series.asarray(), series.axes
            photometric = int(series.keyframe.photometric)
            if photometric == 3:  # palette: the colours it shows, as for PNG
                array = _palette_colours(array, series.keyframe.colormap, path)
                axes, photometric = (axes + "S", 2) if array.ndim > len(axes) else (axes, 1)
            array, channels, channel_axis = _to_image_axes(array, axes, path)
            ndim = array.ndim - (channels > 1)
            recorded = {"spacing": _spacing(tif, series, ndim)}
    except (DataError, DependencyError):
        raise
    except Exception as err:  # tifffile raises TiffFileError, ValueError, OSError, zlib.error...
        raise DataError(
            f"`{path}` must be a complete TIFF image that tifffile can read. "
            f"Received: {_one_line(err)}"
        ) from err
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    geometry = resolve_geometry(path, ndim, spacing, origin, direction, recorded)
    geometry["metadata"]["format"] = "TIFF"
    mode, samples = _PHOTOMETRIC_MODE.get(photometric, ("", 0))
    if channel_axis == "S" and mode and channels in (samples, samples + 1):
        geometry["metadata"]["color_mode"] = mode + "A" * (channels - samples)
    return Image(array=array, channels=channels, **geometry)
