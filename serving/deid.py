"""What may leave a DICOM file: the PS3.15 Basic Application Level Confidentiality Profile.

The rule for what may reach `Image.metadata`, logs, reports and every output is DICOM PS3.15
Annex E, "Attribute Confidentiality Profiles": Table E.1-1 lists the attributes that the Basic
Application Level Confidentiality Profile removes (X), empties (Z), replaces with a dummy (D) or,
for UIDs, replaces with a new UID (U), with combined codes such as X/Z/D meaning "the strictest
that the IOD allows". `PROFILE` transcribes that table (keyword, tag, action) for the attributes
an image file carries or may carry: patient identification and demographics, every study, series,
acquisition, content and procedure date and time, institution and department, the names of
referring, performing, reading and operating people, accession number, study ID, device serial
number, station name and device identifiers, free-text descriptions and comments (StudyDescription,
SeriesDescription, ImageComments, ProtocolName...), and the UIDs (StudyInstanceUID,
SeriesInstanceUID, SOPInstanceUID, FrameOfReferenceUID...). It was transcribed from the standard
(2023 editions), not downloaded; tests check every keyword against pydicom's data dictionary. The
profile also removes every private attribute and overlay/curve data; no private attribute is ever
copied either.

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

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from serving.errors import ConfigError, DataError
from serving.lazy_import import lazy_import

# Metadata key listing the profile attributes a reader kept because `allow=` named them.
PHI_ALLOWED_KEY = "phi_allowed"
REDACTED = "[removed]"
# Values shorter than this are not searched for in notes: "M", "F", "1" would match everywhere.
_MIN_REDACT_LENGTH = 3


@dataclasses.dataclass(frozen=True)
class ProfileAttribute:
    """One row of PS3.15 Table E.1-1: `tag` as the standard writes it, `action` its Basic Profile
    code (X remove, Z empty, D dummy, U new UID, combined codes such as "X/Z/D")."""

    keyword: str
    tag: str
    action: str

    @property
    def repeating(self) -> bool:
        """A repeating-group attribute (overlay, curve: "60xx"), which has no single tag."""
        return "x" in self.tag


_ROWS = """
PatientName (0010,0010) Z
PatientID (0010,0020) Z
IssuerOfPatientID (0010,0021) X
PatientBirthDate (0010,0030) Z
PatientBirthTime (0010,0032) X
PatientSex (0010,0040) Z
PatientInsurancePlanCodeSequence (0010,0050) X
PatientPrimaryLanguageCodeSequence (0010,0101) X
PatientPrimaryLanguageModifierCodeSequence (0010,0102) X
OtherPatientIDs (0010,1000) X
OtherPatientNames (0010,1001) X
OtherPatientIDsSequence (0010,1002) X
PatientBirthName (0010,1005) X
PatientAge (0010,1010) X
PatientSize (0010,1020) X
PatientWeight (0010,1030) X
PatientAddress (0010,1040) X
InsurancePlanIdentification (0010,1050) X
PatientMotherBirthName (0010,1060) X
MilitaryRank (0010,1080) X
BranchOfService (0010,1081) X
MedicalRecordLocator (0010,1090) X
MedicalAlerts (0010,2000) X
Allergies (0010,2110) X
CountryOfResidence (0010,2150) X
RegionOfResidence (0010,2152) X
PatientTelephoneNumbers (0010,2154) X
PatientTelecomInformation (0010,2155) X
EthnicGroup (0010,2160) X
Occupation (0010,2180) X
SmokingStatus (0010,21A0) X
AdditionalPatientHistory (0010,21B0) X
PregnancyStatus (0010,21C0) X
LastMenstrualDate (0010,21D0) X
PatientReligiousPreference (0010,21F0) X
PatientSexNeutered (0010,2203) X/Z
ResponsiblePerson (0010,2297) X
ResponsibleOrganization (0010,2299) X
PatientComments (0010,4000) X
InstanceCreationDate (0008,0012) X/D
InstanceCreationTime (0008,0013) X/Z/D
InstanceCreatorUID (0008,0014) U
AcquisitionUID (0008,0017) U
SOPInstanceUID (0008,0018) U
StudyDate (0008,0020) Z
SeriesDate (0008,0021) X/D
AcquisitionDate (0008,0022) X/Z
ContentDate (0008,0023) Z/D
OverlayDate (0008,0024) X
CurveDate (0008,0025) X
AcquisitionDateTime (0008,002A) X/D
StudyTime (0008,0030) Z
SeriesTime (0008,0031) X/D
AcquisitionTime (0008,0032) X/Z
ContentTime (0008,0033) Z/D
OverlayTime (0008,0034) X
CurveTime (0008,0035) X
AccessionNumber (0008,0050) Z
FailedSOPInstanceUIDList (0008,0058) U
InstitutionName (0008,0080) X/Z/D
InstitutionAddress (0008,0081) X
InstitutionCodeSequence (0008,0082) X/Z/D
ReferringPhysicianName (0008,0090) Z
ReferringPhysicianAddress (0008,0092) X
ReferringPhysicianTelephoneNumbers (0008,0094) X
ReferringPhysicianIdentificationSequence (0008,0096) X
ConsultingPhysicianName (0008,009C) X
ConsultingPhysicianIdentificationSequence (0008,009D) X
ContextGroupExtensionCreatorUID (0008,010D) U
TimezoneOffsetFromUTC (0008,0201) X
StationName (0008,1010) X/Z/D
StudyDescription (0008,1030) X
SeriesDescription (0008,103E) X
InstitutionalDepartmentName (0008,1040) X
PhysiciansOfRecord (0008,1048) X
PhysiciansOfRecordIdentificationSequence (0008,1049) X
PerformingPhysicianName (0008,1050) X
PerformingPhysicianIdentificationSequence (0008,1052) X
NameOfPhysiciansReadingStudy (0008,1060) X
PhysiciansReadingStudyIdentificationSequence (0008,1062) X
OperatorsName (0008,1070) X/Z/D
OperatorIdentificationSequence (0008,1072) X/D
AdmittingDiagnosesDescription (0008,1080) X
AdmittingDiagnosesCodeSequence (0008,1084) X
ReferencedStudySequence (0008,1110) X/Z
ReferencedPerformedProcedureStepSequence (0008,1111) X/Z/D
ReferencedPatientSequence (0008,1120) X
ReferencedImageSequence (0008,1140) X/Z/U*
ReferencedSOPInstanceUID (0008,1155) U
TransactionUID (0008,1195) U
DerivationDescription (0008,2111) X
SourceImageSequence (0008,2112) X/Z/U*
IrradiationEventUID (0008,3010) U
IdentifyingComments (0008,4000) X
CreatorVersionUID (0008,9123) U
ContrastBolusAgent (0018,0010) Z/D
DeviceSerialNumber (0018,1000) X/Z/D
DeviceUID (0018,1002) U
PlateID (0018,1004) X
GeneratorID (0018,1005) X
CassetteID (0018,1007) X
GantryID (0018,1008) X
DateOfSecondaryCapture (0018,1012) X
TimeOfSecondaryCapture (0018,1014) X
SoftwareVersions (0018,1020) X
ProtocolName (0018,1030) X/D
DateOfLastCalibration (0018,1200) X
TimeOfLastCalibration (0018,1201) X
AcquisitionDeviceProcessingDescription (0018,1400) X/D
TargetUID (0018,2042) U
AcquisitionComments (0018,4000) X
DetectorID (0018,700A) X/D
AcquisitionProtocolDescription (0018,9424) X
ContributionDescription (0018,A003) X
StudyInstanceUID (0020,000D) U
SeriesInstanceUID (0020,000E) U
StudyID (0020,0010) Z
FrameOfReferenceUID (0020,0052) U
SynchronizationFrameOfReferenceUID (0020,0200) U
ModifyingDeviceID (0020,3401) X
ModifyingDeviceManufacturer (0020,3404) X
ModifiedImageDescription (0020,3406) X
ImageComments (0020,4000) X
FrameComments (0020,9158) X
ConcatenationUID (0020,9161) U
DimensionOrganizationUID (0020,9164) U
PaletteColorLookupTableUID (0028,1199) U
LargePaletteColorLookupTableUID (0028,1214) U
ImagePresentationComments (0028,4000) X
StudyIDIssuer (0032,0012) X
ScheduledStudyLocation (0032,1020) X
ScheduledStudyLocationAETitle (0032,1021) X
ReasonForStudy (0032,1030) X
RequestingPhysician (0032,1032) X
RequestingService (0032,1033) X
RequestedProcedureDescription (0032,1060) X/Z
RequestedContrastAgent (0032,1070) X
StudyComments (0032,4000) X
ReferencedPatientAliasSequence (0038,0004) X
AdmissionID (0038,0010) X
IssuerOfAdmissionID (0038,0011) X
ScheduledPatientInstitutionResidence (0038,001E) X
AdmittingDate (0038,0020) X
AdmittingTime (0038,0021) X
DischargeDiagnosisDescription (0038,0040) X
SpecialNeeds (0038,0050) X
ServiceEpisodeID (0038,0060) X
IssuerOfServiceEpisodeID (0038,0061) X
ServiceEpisodeDescription (0038,0062) X
CurrentPatientLocation (0038,0300) X
PatientInstitutionResidence (0038,0400) X
PatientState (0038,0500) X
VisitComments (0038,4000) X
ScheduledStationAETitle (0040,0001) X
ScheduledProcedureStepStartDate (0040,0002) X
ScheduledProcedureStepStartTime (0040,0003) X
ScheduledProcedureStepEndDate (0040,0004) X
ScheduledProcedureStepEndTime (0040,0005) X
ScheduledPerformingPhysicianName (0040,0006) X
ScheduledProcedureStepDescription (0040,0007) X
ScheduledPerformingPhysicianIdentificationSequence (0040,000B) X
ScheduledStationName (0040,0010) X
ScheduledProcedureStepLocation (0040,0011) X
PreMedication (0040,0012) X
PerformedStationAETitle (0040,0241) X
PerformedStationName (0040,0242) X
PerformedLocation (0040,0243) X
PerformedProcedureStepStartDate (0040,0244) X
PerformedProcedureStepStartTime (0040,0245) X
PerformedProcedureStepEndDate (0040,0250) X
PerformedProcedureStepEndTime (0040,0251) X
PerformedProcedureStepID (0040,0253) X
PerformedProcedureStepDescription (0040,0254) X
RequestAttributesSequence (0040,0275) X
CommentsOnThePerformedProcedureStep (0040,0280) X
SpecimenUID (0040,0554) U
AcquisitionContextSequence (0040,0555) X
RequestedProcedureID (0040,1001) X
PatientTransportArrangements (0040,1004) X
RequestedProcedureLocation (0040,1005) X
NamesOfIntendedRecipientsOfResults (0040,1010) X
IntendedRecipientsOfResultsIdentificationSequence (0040,1011) X
PersonIdentificationCodeSequence (0040,1101) D
PersonAddress (0040,1102) X
PersonTelephoneNumbers (0040,1103) X
RequestedProcedureComments (0040,1400) X
ReasonForTheImagingServiceRequest (0040,2001) X
OrderEnteredBy (0040,2008) X
OrderEntererLocation (0040,2009) X
OrderCallbackPhoneNumber (0040,2010) X
PlacerOrderNumberImagingServiceRequest (0040,2016) Z
FillerOrderNumberImagingServiceRequest (0040,2017) Z
ImagingServiceRequestComments (0040,2400) X
ConfidentialityConstraintOnPatientDataDescription (0040,3001) X
ReferencedGeneralPurposeScheduledProcedureStepTransactionUID (0040,4023) U
ScheduledStationNameCodeSequence (0040,4025) X
ScheduledStationGeographicLocationCodeSequence (0040,4027) X
PerformedStationNameCodeSequence (0040,4028) X
PerformedStationGeographicLocationCodeSequence (0040,4030) X
ScheduledHumanPerformersSequence (0040,4034) X
ActualHumanPerformersSequence (0040,4035) X
HumanPerformerOrganization (0040,4036) X
HumanPerformerName (0040,4037) X
VerifyingOrganization (0040,A027) X
VerifyingObserverSequence (0040,A073) D
VerifyingObserverName (0040,A075) D
AuthorObserverSequence (0040,A078) X
ParticipantSequence (0040,A07A) X
CustodialOrganizationSequence (0040,A07C) X
VerifyingObserverIdentificationCodeSequence (0040,A088) Z
PersonName (0040,A123) D
UID (0040,A124) U
ContentSequence (0040,A730) X
TemplateExtensionOrganizationUID (0040,DB0C) U
TemplateExtensionCreatorUID (0040,DB0D) U
GraphicAnnotationSequence (0070,0001) D
ContentCreatorName (0070,0084) Z
ContentCreatorIdentificationCodeSequence (0070,0086) X
FiducialUID (0070,031A) U
StorageMediaFileSetUID (0088,0140) U
IconImageSequence (0088,0200) X
TopicTitle (0088,0904) X
TopicSubject (0088,0906) X
TopicAuthor (0088,0910) X
TopicKeywords (0088,0912) X
DigitalSignatureUID (0400,0100) X
ReferencedDigitalSignatureSequence (0400,0402) X
ReferencedSOPInstanceMACSequence (0400,0403) X
MAC (0400,0404) X
ModifiedAttributesSequence (0400,0550) X
OriginalAttributesSequence (0400,0561) X
TextString (2030,0020) X
ReferencedFrameOfReferenceUID (3006,0024) U
RelatedFrameOfReferenceUID (3006,00C2) U
DoseReferenceUID (300A,0013) U
ReviewerName (300E,0008) X/Z
Arbitrary (4000,0010) X
TextComments (4000,4000) X
ResultsIDIssuer (4008,0042) X
InterpretationRecorder (4008,0102) X
InterpretationTranscriber (4008,010A) X
InterpretationText (4008,010B) X
InterpretationAuthor (4008,010C) X
InterpretationApproverSequence (4008,0111) X
PhysicianApprovingInterpretation (4008,0114) X
InterpretationDiagnosisDescription (4008,0115) X
ResultsDistributionListSequence (4008,0118) X
DistributionName (4008,0119) X
DistributionAddress (4008,011A) X
InterpretationIDIssuer (4008,0202) X
Impressions (4008,0300) X
ResultsComments (4008,4000) X
CurveData (50xx,xxxx) X
OverlayData (60xx,3000) X
OverlayComments (60xx,4000) X
MediaStorageSOPInstanceUID (0002,0003) U
ReferencedSOPInstanceUIDInFile (0004,1511) U
DigitalSignaturesSequence (FFFA,FFFA) X
DataSetTrailingPadding (FFFC,FFFC) X
"""


def _table(rows: str) -> dict[str, ProfileAttribute]:
    table = {}
    for line in rows.strip().splitlines():
        keyword, tag, action = line.split()
        table[keyword] = ProfileAttribute(keyword, tag, action)
    return table


# PS3.15 Annex E Table E.1-1 (Basic Profile column), keyword -> row.
PROFILE: Mapping[str, ProfileAttribute] = _table(_ROWS)
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


def is_profile_attribute(keyword: str) -> bool:
    """Whether the Basic Profile removes or replaces the attribute named `keyword`."""
    return keyword in PROFILE_KEYWORDS


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
