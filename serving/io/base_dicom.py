"""What every DICOM reader shares: tolerant tag access, pixel decoding and the modality transform.

`serving.io.dicom_file` reads one file and `serving.io.dicom_series` a folder or study; both stack
planes with `serving.io.dicom_stack`.

Values (`modality_values`), per PS3.3 C.11.1 and C.7.6.3.1.2:
- the Modality LUT: `RescaleSlope * stored + RescaleIntercept` (slope 1 and intercept 0 when
  absent, a zero slope read as absent), or a ModalityLUTSequence applied by pydicom;
- MONOCHROME1 (minimum shown white) is inverted so that brighter always means denser:
  `out = lo + hi - R(stored)`, where `R` is the modality transform above and `[lo, hi]` its output
  range over every stored value that BitsStored and PixelRepresentation allow (unsigned
  `[0, 2**BitsStored - 1]`, signed `[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`). For a linear
  rescale this is `RescaleSlope * (smin + smax - stored) + RescaleIntercept`. The range is that of
  the header, never of the image's own pixels, so the result does not depend on image content.
  PresentationLUTShape is not applied: in CR/DX/MG it only restates the PhotometricInterpretation.
- Colour: a file with SamplesPerPixel 3 (RGB, or YBR_FULL/YBR_FULL_422/YBR_RCT/YBR_ICT, converted
  to RGB by pydicom as PS3.3 C.7.6.3.1.2 defines) or PALETTE COLOR (indices looked up in the
  file's palette) gives RGB values with a trailing channel axis (`colour_pixels`); no modality LUT
  applies to colour. Colour is read file by file (`serving.io.dicom_file`), never as a slice of a
  series.

pydicom is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.deid import ALLOWED_ATTRIBUTES, PHI_ALLOWED_KEY, PROFILE, PROFILE_KEYWORDS, redact
from serving.errors import DataError
from serving.lazy_import import lazy_import

# Only these tags reach `Image.metadata` (beyond a reader's `allow=`): technical attributes that
# the PS3.15 Basic Confidentiality Profile retains. The rule and the profile table live in
# `serving.deid`.
METADATA_TAGS = ALLOWED_ATTRIBUTES
# Above this many stored bits the full stored range is not enumerated for a ModalityLUTSequence.
_MAX_LUT_BITS = 16
MONOCHROME1_NOTE = "MONOCHROME1 inverted so that brighter means denser: lo + hi - value"
# Files smaller than this are read whole; larger values (the pixel data) only when used, so that a
# study folder is grouped into series without holding every series' pixels.
_DEFER_BYTES = 1 << 16
# pip packages that add a pydicom decoder, by transfer syntax family (first match wins).
_DECODER_PACKAGES = (
    ("JPEG 2000", "pylibjpeg pylibjpeg-openjpeg"),
    ("JPEG", "pylibjpeg pylibjpeg-libjpeg"),  # JPEG baseline/extended/lossless and JPEG-LS
    ("RLE", "pylibjpeg pylibjpeg-rle"),  # pydicom decodes RLE itself; this is a faster one
)


def pydicom_module():
    return lazy_import("pydicom", purpose="read and write DICOM images")


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def read_dataset(path: Path, what: str = "Every file in a DICOM series folder"):
    """The dataset in `path`, pixel data read only when used.

    Raises:
        DataError: if `path` is not a DICOM Part 10 file.
    """
    pydicom = pydicom_module()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except Exception as err:  # pydicom raises many types for bad input; all mean "not readable"
        raise DataError(
            f"{what} must be a DICOM Part 10 file (128-byte preamble and 'DICM' marker). Could "
            f"not read `{path}`. Received: {_one_line(err)}"
        ) from err


def sop_class(ds, path: Path) -> tuple[str, str]:
    """`(uid, name)` of the SOP class (SOPClassUID, else the file meta's); name is the UID itself
    when pydicom does not know it, and "" when neither tag is present."""
    uid = _value(ds, "SOPClassUID", path)
    if not uid:
        uid = _value(getattr(ds, "file_meta", None) or {}, "MediaStorageSOPClassUID", path)
    if not uid:
        return "", ""
    from pydicom.uid import UID

    return str(uid), UID(str(uid)).name


def non_image(ds, path: Path, what: str = "Every file in a DICOM series folder") -> str | None:
    """None for an image object; for a non-image object (SR, presentation state, SEG, RT,
    DICOMDIR...) a short description for a note.

    Raises:
        DataError: if an image object (or one of unknown class) holds no pixel data: a file cut
            short before its pixels reads as a short dataset.
    """
    uid, name = sop_class(ds, path)
    known = bool(uid) and name != uid
    if known and "Image Storage" not in name:
        return f"{name} ({_value(ds, 'Modality', path) or 'no modality'})"
    if "PixelData" not in ds:
        raise DataError(
            f"{what} must be a readable DICOM image file; `{path}` holds no pixel data: it is "
            f"truncated or corrupt (or not an image). Received: a {path.stat().st_size}-byte file "
            f"with {len(ds)} data elements and no PixelData"
        )
    return None


def _value(ds, keyword: str, path: Path | str) -> Any:
    """`ds.get(keyword)`. pydicom converts a value on first access, long after `dcmread`
    succeeded, so a damaged one raises (or warns) here; both mean the file is corrupt."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            return ds.get(keyword)
    except Exception as err:  # e.g. NotImplementedError for a VR garbled into an unknown one
        raise DataError(
            f"`{keyword}` in `{path}` must be a readable DICOM value. Received: {_one_line(err)}"
        ) from err


def _numbers(
    ds, keyword: str, path: Path | str, count: int | None = None, positive: bool = False
) -> tuple[float, ...] | None:
    """The values of a numeric tag as floats, or None when it is absent or empty.

    Raises:
        DataError: unless the tag holds exactly `count` (when None, one or more) finite numbers,
            all > 0 when `positive`.
    """
    value = _value(ds, keyword, path)
    if value is None or value == "":
        return None
    multi = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    raw = list(value) if multi else [value]
    try:
        numbers = tuple(float(v) for v in raw)
    except (TypeError, ValueError, OverflowError):  # pydicom leaves an unparsable DS as a str
        numbers = ()
    if (
        not numbers
        or len(numbers) != (count or len(numbers))
        or not all(math.isfinite(n) and (n > 0 or not positive) for n in numbers)
    ):
        rule = f"{count or 'one or more'} {'positive ' if positive else ''}finite number"
        raise DataError(
            f"`{keyword}` in `{path}` must be {rule}{'' if count == 1 else 's'}. "
            f"Received: {[str(v)[:20] for v in raw[:8]]}{'...' if len(raw) > 8 else ''}"
        )
    return numbers


def _integer(ds, keyword: str, path: Path | str, default: int) -> int:
    (value,) = _numbers(ds, keyword, path, 1) or (default,)
    if value != int(value) or not 0 <= value < 2**31:
        raise DataError(f"`{keyword}` in `{path}` must be a whole number >= 0. Received: {value}")
    return int(value)


def _require(ds, path: Path | str, *tags: str) -> None:
    missing = [tag for tag in tags if tag not in ds or _value(ds, tag, path) in (None, "")]
    if missing:
        raise DataError(
            f"A DICOM slice must carry {', '.join(tags)} to be placed in 3D; `{path}` lacks "
            f"{missing}. Received: a file without {missing[0]}"
        )


def has_plane_geometry(ds, path: Path | str) -> bool:
    tags = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    return all(_value(ds, tag, path) not in (None, "") for tag in tags)


def size_of(ds, path: Path | str) -> tuple[int, int]:
    _require(ds, path, "Rows", "Columns")
    return tuple(int(_numbers(ds, t, path, 1, positive=True)[0]) for t in ("Rows", "Columns"))


_COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")


def is_colour(ds, path: Path) -> bool:
    """Whether the image is colour: SamplesPerPixel 3, or a PALETTE COLOR image.

    Raises:
        DataError: for a SamplesPerPixel or PhotometricInterpretation this reader cannot read
            (e.g. 4 samples, or YBR_PARTIAL_422).
    """
    samples = _integer(ds, "SamplesPerPixel", path, 1)
    photometric = str(_value(ds, "PhotometricInterpretation", path) or "MONOCHROME2").strip()
    known = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") if samples == 1 else _COLOUR_PHOTOMETRIC
    if samples not in (1, 3) or photometric not in known:
        raise DataError(
            f"`{path}` must be greyscale (SamplesPerPixel 1, MONOCHROME1/2), palette colour or "
            f"colour (SamplesPerPixel 3: {', '.join(_COLOUR_PHOTOMETRIC)}). "
            f"Received: SamplesPerPixel={samples}, PhotometricInterpretation={photometric}"
        )
    return samples == 3 or photometric == "PALETTE COLOR"


def check_greyscale(ds, path: Path) -> bool:
    """Whether the image is MONOCHROME1 (to be inverted).

    Raises:
        DataError: for colour or palette images (read file by file, not as slices of a series).
    """
    if is_colour(ds, path):
        photometric = str(_value(ds, "PhotometricInterpretation", path)).strip()
        raise DataError(
            f"A slice of a series must be greyscale (MONOCHROME1 or MONOCHROME2); `{path}` is "
            f"colour, which is read one file at a time (`read_image(file)`). Received: "
            f"SamplesPerPixel={_integer(ds, 'SamplesPerPixel', path, 1)}, "
            f"PhotometricInterpretation={photometric}"
        )
    photometric = str(_value(ds, "PhotometricInterpretation", path) or "MONOCHROME2").strip()
    return photometric == "MONOCHROME1"


def colour_pixels(ds, path: Path) -> np.ndarray:
    """The RGB values of a colour or palette image as `(frames, rows, cols, 3)`, in the file's
    integer type (a palette's entries are usually 16-bit).

    Raises:
        DataError: as `decode`, or if the palette cannot be applied.
    """
    pixels = decode(ds, path, colour=True)
    if str(_value(ds, "PhotometricInterpretation", path)).strip() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            pixels = apply_color_lut(pixels, ds)
        except Exception as err:  # missing or damaged palette descriptors and data
            raise DataError(
                f"A PALETTE COLOR image must carry a complete palette (Red/Green/Blue Palette "
                f"Color Lookup Table Descriptor and Data); `{path}` does not. "
                f"Received: {_one_line(err)}"
            ) from err
    return pixels


def _transfer_syntax(ds):
    """The TransferSyntaxUID as a pydicom `UID` (a damaged one may be a plain str), or None."""
    from pydicom.uid import UID

    try:
        value = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    except Exception:  # a damaged value: pydicom's own decoding then fails, and is reported
        return None
    return UID(str(value).strip("\0 ")) if value else None


def _install_hint(syntax) -> str:
    name = syntax.name
    return next((pkgs for family, pkgs in _DECODER_PACKAGES if family in name), "python-gdcm")


def check_decoder(ds, path: Path) -> None:
    """Refuse a compressed file that no installed pydicom pixel handler can decode, naming the
    transfer syntax and the package to install (pydicom decodes RLE itself, 8-bit JPEG and
    JPEG 2000 through Pillow).

    Raises:
        DataError: if the transfer syntax is compressed and no decoder for it is available.
    """
    syntax = _transfer_syntax(ds)
    if syntax is None or not syntax.is_transfer_syntax or not syntax.is_compressed:
        return
    try:
        from pydicom.pixels.decoders.base import get_decoder
    except ImportError:  # pydicom 2.x: handlers instead of decoders
        from pydicom import config

        handlers = [h for h in config.pixel_data_handlers if h.supports_transfer_syntax(syntax)]
        available, missing = any(h.is_available() for h in handlers), []
    else:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:  # pydicom has no decoder at all for this syntax (e.g. MPEG)
            available, missing = False, []
        else:
            available, missing = decoder.is_available, decoder.missing_dependencies
    if not available:
        raise DataError(
            f"Pixel data of `{path}` must be decodable by an installed pydicom pixel handler; "
            f"none handles transfer syntax '{syntax.name}' ({syntax}): install one with "
            f"`pip install {_install_hint(syntax)}`"
            f"{' (pydicom lists: ' + '; '.join(missing) + ')' if missing else ''}. "
            f"Received: TransferSyntaxUID={syntax}"
        )


def decode(ds, path: Path, colour: bool = False) -> np.ndarray:
    """The stored pixel values as `(frames, rows, cols)` (`(frames, rows, cols, 3)` for colour,
    converted to RGB from any YBR colour space; palette indices for PALETTE COLOR).

    Raises:
        DataError: if no decoder is installed for the transfer syntax, or the pixel data is
            truncated or undecodable.
    """
    check_decoder(ds, path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            pixels = ds.pixel_array
    except Exception as err:  # truncated, missing or undecodable pixel data
        syntax = _transfer_syntax(ds)
        hint = ""
        if syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed:
            hint = (
                f" (transfer syntax '{syntax.name}': `pip install {_install_hint(syntax)}` adds "
                f"a decoder that may handle it)"
            )
        raise DataError(
            f"A DICOM slice must hold complete Rows x Columns pixel data; `{path}` is truncated "
            f"or undecodable{hint}. Received: {_one_line(err)}"
        ) from err
    samples = 3 if colour and _integer(ds, "SamplesPerPixel", path, 1) == 3 else 1
    single = 2 if samples == 1 else 3  # the dimensions of one frame
    if pixels.ndim not in (single, single + 1) or pixels.dtype.kind not in "iub" or (
            samples == 3 and pixels.shape[-1] != 3):
        kind = "colour (rows, columns, 3)" if samples == 3 else "greyscale"
        raise DataError(
            f"`{path}` must hold {kind} integer pixel data. "
            f"Received: shape={pixels.shape}, dtype={pixels.dtype}"
        )
    return pixels[None] if pixels.ndim == single else pixels


def rescale_of(ds, path: Path | str) -> tuple[float, float]:
    """`(RescaleSlope, RescaleIntercept)` of a dataset or functional-group item; (1, 0) when
    absent, and a zero slope read as absent (as it always has been)."""
    (slope,) = _numbers(ds, "RescaleSlope", path, 1) or (1.0,)
    (intercept,) = _numbers(ds, "RescaleIntercept", path, 1) or (0.0,)
    return slope or 1.0, intercept


def _stored_range(ds, path: Path) -> tuple[int, int]:
    bits = _integer(ds, "BitsStored", path, 16)
    if not 1 <= bits <= 32:
        raise DataError(f"`BitsStored` in `{path}` must be 1 to 32. Received: {bits}")
    if _integer(ds, "PixelRepresentation", path, 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def modality_values(
    stored: np.ndarray,
    ds,
    path: Path,
    monochrome1: bool,
    rescale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Stored pixels to float32 values: the modality transform, then the MONOCHROME1 inversion
    (see the module docstring).

    Args:
        stored: stored pixel values of one frame, `(rows, cols)`.
        ds: the dataset holding the Image Pixel module (and any ModalityLUTSequence).
        path: the file, for messages.
        monochrome1: invert (from `check_greyscale`).
        rescale: `(slope, intercept)` of this frame; `rescale_of(ds)` when None.

    Raises:
        DataError: if the rescale tags or the LUT are damaged, or map the pixels outside float32.
    """
    lut = _value(ds, "ModalityLUTSequence", path) if rescale is None else None
    slope, intercept = (None, None) if lut else (rescale or rescale_of(ds, path))
    with np.errstate(all="ignore"):  # overflow is refused just below, not warned about
        if lut:
            values, lo, hi = _apply_lut(stored, ds, path, monochrome1)
        else:
            values = stored.astype(np.float64) * slope + intercept
            ends = np.array(_stored_range(ds, path) if monochrome1 else (0, 0)) * slope + intercept
            lo, hi = float(ends.min()), float(ends.max())
        if monochrome1:
            values = (lo + hi) - values
        out = values.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(
            f"RescaleSlope and RescaleIntercept in `{path}` must map the stored pixels to finite "
            f"float32 values. Received: RescaleSlope={slope}, RescaleIntercept={intercept}"
        )
    return out


def _apply_lut(stored, ds, path: Path, monochrome1: bool):
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
            values = np.asarray(apply_modality_lut(stored, ds), np.float64)
            lo = hi = 0.0
            if monochrome1:
                smin, smax = _stored_range(ds, path)
                if smax - smin >= 2**_MAX_LUT_BITS:
                    raise ValueError(f"BitsStored above {_MAX_LUT_BITS} with a LUT")
                every = apply_modality_lut(np.arange(smin, smax + 1), ds)
                lo, hi = float(np.min(every)), float(np.max(every))
    except DataError:
        raise
    except Exception as err:  # a damaged LUT descriptor or data
        raise DataError(
            f"`ModalityLUTSequence` in `{path}` must hold a valid LUT (LUTDescriptor and "
            f"LUTData). Received: {_one_line(err)}"
        ) from err
    return values, lo, hi


def _plain(value: Any) -> Any:
    """pydicom values (DSfloat, IS, MultiValue...) as JSON-friendly Python values."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def metadata(
    ds, path: Path, num_slices: int, notes: Sequence[str] = (), allow: Sequence[str] = ()
) -> dict[str, Any]:
    """`Image.metadata` of a DICOM image: the `ALLOWED_ATTRIBUTES` present in `ds`, those named
    by `allow` (already checked by `serving.deid.check_allow`), `NumberOfSlices`, and `notes` when
    there are any.

    A profile attribute (`serving.deid.PROFILE`) is copied only when `allow` names it, and is then
    listed in `metadata["phi_allowed"]`. Notes are built from file names, SOP class names and
    geometry; any value of a profile attribute of `ds` that is not allowed is still removed from
    them (`serving.deid.redact`).
    """
    keys = list(dict.fromkeys((*ALLOWED_ATTRIBUTES, *allow)))
    values = {tag: _value(ds, tag, path) for tag in keys}
    meta = {tag: _plain(value) for tag, value in values.items() if value not in (None, "")}
    meta["NumberOfSlices"] = num_slices
    if notes:
        hidden = profile_values(ds, path, keep=allow)
        meta["notes"] = [redact(str(note), hidden) for note in notes]
    allowed = [k for k in allow if k in PROFILE_KEYWORDS and k in meta]
    if allowed:
        meta[PHI_ALLOWED_KEY] = allowed
    return meta


def profile_values(ds, path: Path, keep: Sequence[str] = ()) -> set[str]:
    """The text of every plain-valued profile attribute in `ds` (not those in `keep`), with the
    components of person names, for `serving.deid.redact`. Unreadable values are skipped: they
    cannot have been copied anywhere either."""
    found: set[str] = set()
    for keyword, row in PROFILE.items():
        if row.repeating or keyword in keep or row.number not in ds:
            continue
        try:
            # A row newer than pydicom's dictionary has no keyword pydicom knows: read it by tag.
            value = _value(ds, keyword, path) if row.in_pydicom else _value(ds, row.number, path).value
        except DataError:
            continue
        if value is None or _is_sequence_of_datasets(value):
            continue
        items = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
        for item in items:
            text = str(item).strip()
            found.add(text)
            if "^" in text:  # a person name: family^given^middle^prefix^suffix
                found.update(part.strip() for part in text.split("^"))
    return {v for v in found if v}


def _is_sequence_of_datasets(value: Any) -> bool:
    from pydicom.dataset import Dataset

    return isinstance(value, Sequence) and any(isinstance(item, Dataset) for item in value)


def is_multiframe(ds, path: Path) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or _integer(ds, "NumberOfFrames", path, 1) > 1
