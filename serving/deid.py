"""What may leave a DICOM file: the PS3.15 Basic Application Level Confidentiality Profile.

The rule for what may reach `Image.metadata`, logs, reports and every output is DICOM PS3.15
Annex E, "Attribute Confidentiality Profiles": Table E.1-1 lists the attributes that the Basic
Application Level Confidentiality Profile removes (X), empties (Z), replaces with a dummy (D) or,
for UIDs, replaces with a new UID (U), with combined codes such as X/Z/D meaning "the strictest
that the IOD allows". `PROFILE` is that whole table: 653 attributes (patient identification and
demographics, every date and time, institutions, people, device identifiers, free-text
descriptions and comments, the UIDs...) plus the repeating groups curve data (50xx,xxxx), overlay
data (60xx,3000) and overlay comments (60xx,4000). It is read at import from package data,
`serving/deid_profile.csv` (keyword, tag, action, name, in_pydicom), and follows the PS3.15 2026c
edition plus Dose Calculation Model Name (3004,007F), the one row 2026d adds. Keywords are
pydicom's; the rows newer than pydicom's data dictionary carry the standard's name in keyword form
and in_pydicom "no". Tests check every row against pydicom's dictionary, against the code set of
the standard, for duplicate tags and keywords, and against an independent transcription of the
2026c table (dicom-anonymizer's), with each deliberate difference listed. The profile also
removes every private attribute; no private attribute is ever copied either.

The rule kerasmed applies:
- **Image metadata is an allow-list.** DICOM readers copy only `ALLOWED_ATTRIBUTES`: technical
  attributes the profile retains (modality, equipment make and model, acquisition parameters,
  pixel encoding). None of them is in `PROFILE` (a test checks it), so anything the profile
  removes or replaces is out, including free text such as SeriesDescription.
- **Explicit opt-in.** A reader's `allow=` argument (`read_dicom_series(folder,
  allow=["SeriesDescription"])`, or `read_image(path, allow=[...])`) copies more attributes. A
  profile attribute copied that way is listed in `metadata["phi_allowed"]`, so it stays visible
  that this image carries identifying data on request. There is no global switch.
- **Final guard.** `serving.Image` refuses (raises `DataError`, never silently drops) metadata whose
  keys are profile attributes not listed in `metadata["phi_allowed"]`: a writer or caller that
  builds metadata by hand fails loudly instead of leaking.
- **Notes** (`metadata["notes"]`) are built from file names, SOP class names, modality, counts and
  geometry only; as a second line of defence, `redact` removes any value of a profile attribute
  of the dataset from them.

This module imports neither numpy nor pydicom (pydicom only when `check_allow` checks keywords).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from serving.errors import ConfigError, DataError
from serving.lazy_import import lazy_import

# Table E.1-1 as package data of `serving`: columns keyword, tag, action, name, in_pydicom.
PROFILE_FILE = "deid_profile.csv"
# Metadata key listing the profile attributes a reader kept because `allow=` named them.
PHI_ALLOWED_KEY = "phi_allowed"
REDACTED = "[removed]"
# Values shorter than this are not searched for in notes: "M", "F", "1" would match everywhere.
_MIN_REDACT_LENGTH = 3


@dataclasses.dataclass(frozen=True)
class ProfileAttribute:
    """One row of PS3.15 Table E.1-1: `tag` as the standard writes it, `action` its Basic Profile
    code (X remove, Z empty, D dummy, U new UID, combined codes such as "X/Z/D"), `name` the
    standard's name, and whether pydicom's data dictionary knows the keyword (rows newer than the
    installed pydicom carry the standard's name in keyword form)."""

    keyword: str
    tag: str
    action: str
    name: str = ""
    in_pydicom: bool = True

    @property
    def repeating(self) -> bool:
        """A repeating-group attribute (overlay, curve: "60xx"), which has no single tag."""
        return "x" in self.tag

    @property
    def number(self) -> int | None:
        """The tag as one integer (0x00100010), for looking up an attribute that pydicom cannot
        name; None for a repeating group."""
        return None if self.repeating else int(self.tag[1:5] + self.tag[6:10], 16)


def _load_profile() -> dict[str, ProfileAttribute]:
    # Package data read with the stdlib only: serving must import with numpy alone.
    text = resources.files("serving").joinpath(PROFILE_FILE).read_text(encoding="utf-8")
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["keyword"]] = ProfileAttribute(
            row["keyword"], row["tag"], row["action"], row["name"], row["in_pydicom"] == "yes"
        )
    return table


# PS3.15 Annex E Table E.1-1 (Basic Profile column), keyword -> row.
PROFILE: Mapping[str, ProfileAttribute] = _load_profile()
PROFILE_KEYWORDS = frozenset(PROFILE)

# What DICOM readers copy into `Image.metadata`: technical attributes the Basic Profile retains
# (none is in `PROFILE`). Geometry (spacing, origin, direction) and the rescale are applied to the
# image itself, so they are not repeated here.
ALLOWED_ATTRIBUTES: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesNumber",
    "ImageType",
    "BodyPartExamined",
    "PatientPosition",
    "ViewPosition",
    "ImageLaterality",
    "PhotometricInterpretation",
    "BitsStored",
    "RescaleType",
    "SliceThickness",
    "SpacingBetweenSlices",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "PixelSpacingCalibrationType",
    "EstimatedRadiographicMagnificationFactor",
)


def check_allow(allow: Iterable[str] | None) -> tuple[str, ...]:
    """Validate a reader's `allow=` argument: DICOM keywords to copy into metadata beyond
    `ALLOWED_ATTRIBUTES`.

    Args:
        allow: keywords (e.g. `["SeriesDescription"]`), or None/empty for none.

    Returns:
        The keywords, in order, without repeats.

    Raises:
        ConfigError: if `allow` is a single string (not a list of keywords) or holds something
            other than a DICOM keyword that pydicom knows, or a sequence or bulk-data attribute
            (they have no plain value to copy).
    """
    if allow is None:
        return ()
    if isinstance(allow, (str, bytes)):
        raise ConfigError(
            f"`allow` must be a list of DICOM keywords, e.g. allow=['SeriesDescription']. "
            f"Received: allow={allow!r} (a single string)"
        )
    try:
        keywords = list(dict.fromkeys(allow))
    except TypeError as err:
        raise ConfigError(
            f"`allow` must be a list of DICOM keywords. Received: allow={allow!r}"
        ) from err
    lazy_import("pydicom", purpose="check DICOM keywords in `allow`")
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for keyword in keywords:
        tag = tag_for_keyword(keyword) if isinstance(keyword, str) else None
        if tag is None:
            raise ConfigError(
                f"`allow` must hold DICOM attribute keywords as pydicom spells them (e.g. "
                f"'SeriesDescription', 'PatientAge'). Received: {keyword!r}"
            )
        if dictionary_VR(tag) in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW"):
            raise ConfigError(
                f"`allow` may name attributes with a plain value only, not sequences or bulk "
                f"data. Received: {keyword!r} (VR {dictionary_VR(tag)})"
            )
    return tuple(keywords)


def check_metadata(metadata: Mapping[str, Any], what: str = "`metadata`") -> None:
    """Refuse metadata that holds profile attributes not explicitly allowed.

    A key that `PROFILE` names is allowed only when `metadata[PHI_ALLOWED_KEY]` lists it (readers
    set that list from their `allow=` argument).

    Raises:
        DataError: naming the offending keys.
    """
    allowed = metadata.get(PHI_ALLOWED_KEY) or ()
    if isinstance(allowed, str):
        allowed = (allowed,)
    leaked = sorted(k for k in PROFILE_KEYWORDS.intersection(metadata) if k not in allowed)
    if leaked:
        raise DataError(
            f"{what} must not hold patient-identifying tags: attributes the DICOM PS3.15 Basic "
            f"Application Level Confidentiality Profile removes or replaces may only be kept when "
            f"listed in metadata['{PHI_ALLOWED_KEY}'] (a reader's `allow=` argument). "
            f"Received: {leaked}"
        )


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with every occurrence of each of `values` (3 characters or more) replaced by
    "[removed]"; longer values first, so a value containing another is removed whole."""
    for value in sorted({v for v in values if len(v) >= _MIN_REDACT_LENGTH}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
