"""Read one DICOM file as an `Image`: a slice, a projection radiograph or an enhanced multi-frame
object.

What a file becomes:
- **a slice** (single frame with ImagePositionPatient, ImageOrientationPatient and PixelSpacing,
  not a projection modality): a 3D `(1, rows, cols)` image in LPS, exactly what reading a folder
  holding only that file gives. The slice gap is SpacingBetweenSlices, else SliceThickness, else
  1.0 (then listed in `metadata["spacing_assumed_axes"]`).
- **a projection radiograph** (Modality CR, DX, MG, IO, PX, RG, XA or RF, or any single frame
  without plane geometry): a 2D `(rows, cols)` image with no patient geometry (origin 0, default
  direction). Spacing: PixelSpacing when present (PS3.3 10.7.1.3: spacing in the patient, possibly
  calibrated, see PixelSpacingCalibrationType), else ImagerPixelSpacing (at the detector front
  plane, not corrected for geometric magnification), else 1.0 flagged as assumed
  (`metadata["spacing_source"] == "assumed"`). `metadata["pixel_spacing_tag"]` names the tag used.
  A spacing tag holding two numbers that are zero, negative or not finite (`0.000\\0.000` is what
  equipment writes when it does not know) is read as absent, with a note: a slice whose
  PixelSpacing is unknown is therefore read as such a 2D image, without patient geometry.
- **an enhanced multi-frame object** (Enhanced CT/MR/PET..., a PerFrameFunctionalGroupsSequence):
  a 3D image of its frames sorted along the normal. Each frame's PlanePositionSequence,
  PlaneOrientationSequence and PixelMeasuresSequence are taken from its per-frame functional group,
  else from the shared one; its PixelValueTransformationSequence (per-frame or shared) gives the
  rescale, else the top-level RescaleSlope/Intercept. Frames must form one stack: several stacks
  (echoes, time points) share positions and are refused, as are frames lacking a position that
  others have.
- **a multi-frame object without per-frame functional groups** (an enhanced object whose
  PerFrameFunctionalGroupsSequence was stripped, a legacy multi-frame secondary capture or cine):
  `(frames, rows, cols)` without patient geometry, as a colour cine is: origin 0, the default
  direction, the frame axis spacing 1.0 assumed, in-plane spacing from a surviving
  SharedFunctionalGroupsSequence's PixelMeasuresSequence, else as for a radiograph; rescale from
  the shared PixelValueTransformationSequence, else the top-level tags. A note says so.

- **a colour image** (SamplesPerPixel 3 in RGB or a YBR colour space, or PALETTE COLOR: secondary
  captures, ultrasound, photographs, slides): RGB values with a trailing channel axis,
  `(rows, cols, 3)` with `channels=3`, spacing as for a radiograph; a multi-frame colour file
  (a cine loop) is `(frames, rows, cols, 3)`, its frame axis without geometry (spacing 1.0,
  assumed). Plane geometry is not used for colour: it is never a slice of a volume.

Values, colour and MONOCHROME1 follow `serving.io.base_dicom`. Compressed transfer syntaxes are
decoded by pydicom's pixel handlers; a missing handler is a `DataError` naming the syntax and the
package to install.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serving.deid import check_allow
from serving.errors import DataError
from serving.image import Image
from serving.io.base_dicom import (
    MONOCHROME1_NOTE,
    _integer,
    _numbers,
    _require,
    _value,
    check_greyscale,
    colour_pixels,
    decode,
    has_plane_geometry,
    is_colour,
    metadata,
    modality_values,
    non_image,
    read_dataset,
    rescale_of,
    size_of,
    sop_class,
)
from serving.io.dicom_stack import Plane, slice_plane, stack_planes

# Projection radiography: positions in these files are not planes through the patient.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RG", "XA", "RF"})
_FRAME_MACROS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")


def read_dicom_file(
    path: str | os.PathLike, *, resample_uneven: bool = False, allow: Sequence[str] | None = None
) -> Image:
    """Read one DICOM image file (see the module docstring for what it becomes).

    Args:
        path: a DICOM Part 10 file.
        resample_uneven: for an enhanced multi-frame object whose frames are unevenly spaced,
            interpolate them linearly along the normal onto a uniform grid instead of refusing
            (see `serving.io.base_dicom.stack_planes`).
        allow: DICOM keywords to copy into `metadata` beyond the technical allow-list
            (`serving.deid.ALLOWED_ATTRIBUTES`), e.g. `["SeriesDescription"]`. Attributes that the
            PS3.15 Basic Confidentiality Profile removes are out unless named here, and are then
            listed in `metadata["phi_allowed"]`.

    Returns:
        An `Image` of float32 values (rescale applied, MONOCHROME1 inverted): `(1, rows, cols)`
        for a slice, `(rows, cols)` for a radiograph, `(frames, rows, cols)` for a multi-frame
        object; allow-listed metadata (see `serving.deid`) with `notes` when something was
        assumed.

    Raises:
        DataError: if the file is missing, not DICOM, not an image object (SR, presentation
            state...), truncated, compressed with no decoder installed (naming the transfer
            syntax and the package), its geometry or rescale tags are damaged (a spacing of two
            numbers that are zero, negative or not finite is not damage, see the module
            docstring), or the per-frame functional groups of an enhanced object are
            inconsistent (a frame lacking a position, two frames at one position).
        ConfigError: if `allow` names something other than plain-valued DICOM keywords.

    Example:
        >>> xray = read_dicom_file("chest_pa.dcm")
        >>> xray.shape, xray.metadata["pixel_spacing_tag"]   # ((2048, 2048), 'ImagerPixelSpacing')
    """
    allow = check_allow(allow)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`path` must be an existing DICOM file. Received: path={str(path)!r}")
    ds = read_dataset(path, what="`path`")
    kind = non_image(ds, path, what="`path`")
    if kind:
        raise DataError(
            f"`{path}` must be a DICOM image object to be read as an image; it is a {kind} "
            f"object. Received: SOPClassUID={sop_class(ds, path)[0]}"
        )
    return image_from_dataset(
        ds, path, name=path.name, notes=[], resample_uneven=resample_uneven, allow=allow
    )


def image_from_dataset(
    ds,
    path: Path,
    *,
    name: str,
    notes: list[str],
    resample_uneven: bool = False,
    allow: Sequence[str] = (),
) -> Image:
    """The `Image` of one image dataset (already read, known to be an image object).

    Args:
        ds: the dataset of `path`.
        path: the file, for messages.
        name: how notes name the file (no absolute path).
        notes: notes gathered so far (e.g. by the folder reader); more are appended.
        resample_uneven: see `read_dicom_file`.
        allow: checked `allow` keywords (see `read_dicom_file`).

    Raises:
        DataError: see `read_dicom_file`.
    """
    modality = str(_value(ds, "Modality", path) or "OT")
    if is_colour(ds, path):
        return _colour(ds, path, modality, notes, allow)
    monochrome1 = check_greyscale(ds, path)
    if monochrome1:
        notes.append(MONOCHROME1_NOTE)
    frames = _integer(ds, "NumberOfFrames", path, 1)
    # A sequence present but empty carries no more than a stripped (deleted) one.
    if _value(ds, "PerFrameFunctionalGroupsSequence", path):
        planes = _frame_planes(ds, path, name, frames, monochrome1)
    elif frames > 1:
        return _frame_stack(ds, path, modality, frames, monochrome1, notes, allow)
    elif (
        modality not in PROJECTION_MODALITIES
        and has_plane_geometry(ds, path)
        and known_spacing(ds, "PixelSpacing", path)[0] is not None
    ):
        planes = [slice_plane(ds, path, name)]
    else:
        return _projection(ds, path, modality, monochrome1, notes, allow)
    array, spacing, origin, direction, extra = stack_planes(
        planes, str(path), resample_uneven=resample_uneven, notes=notes
    )
    meta = {**metadata(ds, path, array.shape[0], notes, allow), **extra}
    return Image(array, spacing, origin, direction, modality, meta)


def _projection(
    ds, path: Path, modality: str, monochrome1: bool, notes: list[str], allow: Sequence[str]
) -> Image:
    """A single frame without patient-plane geometry, as a 2D image."""
    values = modality_values(decode(ds, path)[0], ds, path, monochrome1)
    spacing, extra = _pixel_spacing(ds, path, notes)
    if modality not in PROJECTION_MODALITIES:
        tags = ("ImagePositionPatient", "ImageOrientationPatient")
        missing = [tag for tag in tags if _value(ds, tag, path) in (None, "")]
        if extra.get("pixel_spacing_tag") != "PixelSpacing":
            missing.append("usable PixelSpacing")
        notes.append(f"no {' or '.join(missing)}: read as a 2D image without patient geometry")
    meta = {**metadata(ds, path, 1, notes, allow), **extra}
    return Image(values, spacing, modality=modality, metadata=meta)


def _colour(ds, path: Path, modality: str, notes: list[str], allow: Sequence[str]) -> Image:
    """A colour or palette image: `(rows, cols, 3)`, or `(frames, rows, cols, 3)`."""
    pixels = colour_pixels(ds, path)
    spacing, extra = _pixel_spacing(ds, path, notes)
    photometric = str(_value(ds, "PhotometricInterpretation", path)).strip()
    if photometric != "RGB":
        notes.append(f"{photometric} shown as RGB")
    extra["color_mode"] = "RGB"
    if pixels.shape[0] == 1:
        array = pixels[0]
    else:
        array = pixels
        notes.append(f"{pixels.shape[0]} colour frames stacked on axis 0 without patient geometry")
        spacing, extra = _frame_axis(spacing, extra)
    meta = {**metadata(ds, path, pixels.shape[0], notes, allow), **extra}
    return Image(array, spacing, modality=modality, metadata=meta, channels=3)


def _frame_axis(spacing: tuple[float, float], extra: dict) -> tuple[tuple[float, ...], dict]:
    """Spacing and metadata of frames stacked on axis 0 without positions: the frame axis is 1.0
    and assumed, the in-plane axes assumed too when `extra` says their spacing was."""
    extra = dict(extra)
    assumed = [0] + ([1, 2] if extra.pop("spacing_source", None) == "assumed" else [])
    return (1.0, *spacing), {**extra, "spacing_assumed_axes": assumed}


def known_spacing(ds, keyword: str, path: Path | str) -> tuple[tuple[float, float] | None, str]:
    """A two-value spacing tag (PixelSpacing, ImagerPixelSpacing) where an unknown value is
    tolerated: what equipment writes when it does not know the spacing (`0.000\\0.000`), or a
    negative or non-finite value, is read as not known.

    Use this only where no 3D geometry depends on the value (a radiograph, a colour image, frames
    stacked without positions); a slice of a series reads PixelSpacing strictly.

    Returns:
        `(spacing, "")` when the tag holds two positive finite numbers, `(None, "")` when it is
        absent or empty, and `(None, why)` when it holds two numbers that are not all positive
        and finite; `why` names the tag and its values, for a note.

    Raises:
        DataError: if the tag holds other than two values, or text that is not a number: the
            file is damaged, not merely unsure.
    """
    try:
        return _numbers(ds, keyword, path, 2, positive=True), ""
    except DataError as err:
        refused = err
    value = _value(ds, keyword, path)
    raw = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = [float(v) for v in raw]
    except (TypeError, ValueError, OverflowError):
        numbers = []
    if len(numbers) != 2:  # a wrong count or text that is not a number: damaged
        raise refused
    shown = [str(v)[:20] for v in raw]
    return None, f"{keyword} {shown} is not a usable spacing (zero, negative or not finite)"


def _pixel_spacing(ds, path: Path, notes: list[str]) -> tuple[tuple[float, float], dict]:
    """In-plane spacing of an image without patient geometry: PixelSpacing, else
    ImagerPixelSpacing, else 1.0 assumed; and the metadata saying which (`pixel_spacing_tag`, or
    `spacing_source` "assumed"). A tag holding zero, negative or non-finite numbers is read as
    absent (`known_spacing`), and the one note appended says so."""
    pixel, pixel_unknown = known_spacing(ds, "PixelSpacing", path)
    imager, imager_unknown = known_spacing(ds, "ImagerPixelSpacing", path)
    unknown = "; ".join(why for why in (pixel_unknown, imager_unknown) if why)
    ignored = f"; {unknown}: ignored" if unknown else ""
    extra: dict = {}
    if pixel:
        spacing, extra["pixel_spacing_tag"] = pixel, "PixelSpacing"
        if imager and not np.allclose(pixel, imager):
            notes.append(
                f"PixelSpacing {list(pixel)} (in the patient) used; ImagerPixelSpacing "
                f"{list(imager)} (at the detector) differs"
            )
        elif unknown:
            notes.append(f"spacing from PixelSpacing{ignored}")
    elif imager:
        spacing, extra["pixel_spacing_tag"] = imager, "ImagerPixelSpacing"
        notes.append(
            "spacing from ImagerPixelSpacing: at the detector, not corrected for geometric "
            f"magnification{ignored}"
        )
    elif unknown:
        spacing = (1.0, 1.0)
        extra["spacing_source"] = "assumed"
        notes.append(f"{unknown}: spacing assumed to be 1.0 per pixel")
    else:
        spacing = (1.0, 1.0)
        extra["spacing_source"] = "assumed"
        notes.append("no PixelSpacing or ImagerPixelSpacing: spacing set to 1.0 per pixel")
    return tuple(spacing), extra


def _frame_stack(
    ds, path: Path, modality: str, frames: int, monochrome1: bool, notes: list[str], allow: Sequence[str]
) -> Image:
    """A multi-frame greyscale file without per-frame functional groups, as `(frames, rows, cols)`
    without patient geometry: there is no position to place or order the frames by.

    Raises:
        DataError: as `decode`, if the pixel data does not hold NumberOfFrames frames, or a
            surviving shared functional group is damaged.
    """
    stored = decode(ds, path)
    if stored.shape[0] != frames:
        raise DataError(
            f"The pixel data of `{path}` must hold NumberOfFrames ({frames}) frames. "
            f"Received: {stored.shape[0]}"
        )
    shared = (_value(ds, "SharedFunctionalGroupsSequence", path) or [None])[0]

    def shared_item(keyword: str):
        items = _value(shared, keyword, path) if shared is not None else None
        return items[0] if items else None

    transform, measures = (shared_item(k) for k in ("PixelValueTransformationSequence",
                                                     "PixelMeasuresSequence"))
    rescale = rescale_of(transform, path) if transform is not None else None
    array = np.empty(stored.shape, np.float32)
    for i, frame in enumerate(stored):
        array[i] = modality_values(frame, ds, path, monochrome1, rescale)
    in_plane, unknown = known_spacing(measures, "PixelSpacing", path) if measures else (None, "")
    if in_plane:
        spacing, extra = in_plane, {"pixel_spacing_tag": "PixelSpacing"}
        source = "the shared PixelMeasuresSequence"
    else:
        spacing, extra = _pixel_spacing(ds, path, notes)
        source = f"the top-level tags{f' ({unknown} in the shared group)' if unknown else ''}"
    kind = sop_class(ds, path)[1] or "multi-frame image"
    notes.append(
        f"{kind} without per-frame functional groups: {frames} frames stacked on axis 0 without "
        f"patient geometry (origin 0, default direction, frame spacing 1.0 assumed); in-plane "
        f"spacing from {source}; rescale from "
        f"{'the shared PixelValueTransformationSequence' if rescale else 'the top-level tags'}"
    )
    spacing, extra = _frame_axis(spacing, extra)
    meta = {**metadata(ds, path, frames, notes, allow), **extra}
    return Image(array, spacing, modality=modality, metadata=meta)


def _frame_planes(ds, path: Path, name: str, frames: int, monochrome1: bool) -> list[Plane]:
    """One plane per frame of an enhanced multi-frame object, from its functional groups."""
    per_frame = _value(ds, "PerFrameFunctionalGroupsSequence", path) or []
    if len(per_frame) != frames:
        raise DataError(
            f"`PerFrameFunctionalGroupsSequence` in `{path}` must hold one item per frame "
            f"(NumberOfFrames {frames}). Received: {len(per_frame)} items"
        )
    shared = (_value(ds, "SharedFunctionalGroupsSequence", path) or [None])[0]
    size = size_of(ds, path)
    stored: list[np.ndarray] = []  # decoded once, on the first frame's read

    def macro(i: int, keyword: str, source: str):
        for group in (per_frame[i], shared):
            items = _value(group, keyword, source) if group is not None else None
            if items:
                return items[0]
        return None

    def values(i: int, rescale: tuple[float, float]) -> np.ndarray:
        if not stored:
            stored.append(decode(ds, path))
            if stored[0].shape[0] != frames:
                raise DataError(
                    f"The pixel data of `{path}` must hold NumberOfFrames ({frames}) frames. "
                    f"Received: {stored[0].shape[0]}"
                )
        return modality_values(stored[0][i], ds, path, monochrome1, rescale)

    planes = []
    for i in range(frames):
        source = f"frame {i + 1} of {path}"
        found = {keyword: macro(i, keyword, source) for keyword in _FRAME_MACROS}
        missing = [keyword for keyword, item in found.items() if item is None]
        if missing:
            raise DataError(
                f"Every frame of an enhanced multi-frame DICOM must have {', '.join(_FRAME_MACROS)} "
                f"(per-frame or shared); `{source}` lacks {missing}. Received: no {missing[0]}"
            )
        position, orientation, measures = found.values()
        _require(position, source, "ImagePositionPatient")
        _require(orientation, source, "ImageOrientationPatient")
        _require(measures, source, "PixelSpacing")
        transform = macro(i, "PixelValueTransformationSequence", source)
        rescale = rescale_of(transform if transform is not None else ds, source)
        planes.append(
            Plane(
                source,
                f"{name} frame {i + 1}",
                np.array(_numbers(position, "ImagePositionPatient", source, 3)),
                np.array(_numbers(orientation, "ImageOrientationPatient", source, 6)),
                _numbers(measures, "PixelSpacing", source, 2, positive=True),
                size,
                measures,
                lambda i=i, rescale=rescale: values(i, rescale),
            )
        )
    return planes
