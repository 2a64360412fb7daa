"""serving.deid: the PS3.15 Basic Confidentiality Profile table, the metadata allow-list, `allow=`,
the `Image` guard and the redaction of notes."""

import csv
import io
import shutil
from importlib import resources

import numpy as np
import pydicom
import pytest
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c
from pydicom.data import get_testdata_file
from pydicom.datadict import (
    dictionary_description,
    dictionary_has_tag,
    dictionary_VR,
    repeater_has_keyword,
    tag_for_keyword,
)

from serving.deid import (
    ALLOWED_ATTRIBUTES,
    PHI_ALLOWED_KEY,
    PROFILE,
    PROFILE_FILE,
    ProfileAttribute,
    check_allow,
    redact,
)
from serving.errors import ConfigError, DataError
from serving.image import PHI_KEYS, Image
from serving.io import read_dicom_file, read_dicom_series, read_image, write_dicom_series

# Rows of PS3.15 Table E.1-1 that the issue names, with their Basic Profile action, written out
# here from the standard rather than read back from the module.
NAMED_ROWS = {
    "PatientName": "Z", "PatientID": "Z/D", "PatientBirthDate": "Z", "PatientSex": "Z",
    "PatientAge": "X", "PatientAddress": "X", "OtherPatientIDs": "X", "OtherPatientNames": "X",
    "StudyDate": "Z", "SeriesDate": "X/D", "AcquisitionDate": "X/Z", "ContentDate": "Z/D",
    "StudyTime": "Z", "SeriesTime": "X/D", "AcquisitionTime": "X/Z", "ContentTime": "Z/D",
    "InstitutionName": "X/Z/D", "InstitutionAddress": "X", "ReferringPhysicianName": "Z",
    "PerformingPhysicianName": "X", "OperatorsName": "X/Z/D", "AccessionNumber": "Z",
    "StudyID": "Z", "DeviceSerialNumber": "X/Z/D", "StationName": "X/Z/D",
    "StudyDescription": "X", "SeriesDescription": "X", "ImageComments": "X",
    "ProtocolName": "X/D", "StudyInstanceUID": "U", "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    # Rows whose code changed since the 2023 editions (PatientID Z -> Z/D in 2024b), or that our
    # first transcription had wrong; all as the 2026c text reads.
    "AcquisitionDateTime": "X/Z/D", "ConsultingPhysicianName": "Z",
    "AcquisitionContextSequence": "X/Z", "VerifyingOrganization": "D", "ContentSequence": "D",
    "ContentCreatorName": "Z/D", "DigitalSignatureUID": "U",
}
# Attributes newer than pydicom 3.0.2's data dictionary: their keyword is the standard's name in
# keyword form (the rows say in_pydicom "no").
NEWER_THAN_PYDICOM = {
    "PrincipalDiagnosisCodeSequence", "PrimaryDiagnosisCodeSequence",
    "SecondaryDiagnosesCodeSequence", "HistologicalDiagnosesCodeSequence",
    "PersonNamesToUseSequence", "NameToUse", "NameToUseComment", "ThirdPersonPronounsSequence",
    "PronounCodeSequence", "PronounComment", "GenderIdentitySequence", "GenderIdentityCodeSequence",
    "GenderIdentityComment", "SexParametersForClinicalUseCategoryComment",
    "SexParametersForClinicalUseCategorySequence",
    "SexParametersForClinicalUseCategoryCodeSequence",
    "SexParametersForClinicalUseCategoryReference", "EthnicGroups", "EffectiveStartDateTime",
    "EffectiveStopDateTime", "AnnotationDateTime", "SegmentDefinitionDateTime", "MontageName",
    "MontageChannelLabel", "DisplayURI", "DoseCalculationModelName",
}
# The Basic Profile column's code set (PS3.15 E.1.1); K and C belong to the options only.
ACTIONS = {"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
# A value of each VR, for writing every plain-valued profile attribute into a file.
VALUES = {
    "PN": "Quixote^Alonso", "DA": "19230417", "TM": "101112", "DT": "19230417101112",
    "UI": "1.2.826.0.1.3680043.8.498.77", "AS": "099Y", "IS": "4711", "DS": "81.5",
    "CS": "LAMANCHA", "AE": "TOBOSO", "US": 4711, "SS": 4711, "UL": 4711, "SL": 4711,
    "FL": 81.5, "FD": 81.5,
}


def _ct():
    array = np.random.default_rng(0).uniform(-1000, 400, (3, 6, 7)).astype(np.float32)
    return Image(array, (2.0, 0.7, 0.7), modality="CT")


def _plain_profile_keywords():
    """Profile attributes a reader could copy: a single tag, a plain value, not file meta."""
    out = []
    for keyword, row in PROFILE.items():
        if row.repeating or not row.in_pydicom or row.tag[1:5] in ("0000", "0002", "FFFA", "FFFC"):
            continue
        if dictionary_VR(tag_for_keyword(keyword)) in ("SQ", "OB", "OW", "UN"):
            continue
        out.append(keyword)
    return out


def _value(keyword, i):
    vr = dictionary_VR(tag_for_keyword(keyword))
    if vr in VALUES:
        return VALUES[vr]
    return f"Rocinante-{i:03d}"  # LO, SH, LT, ST, UT, UC, UR: free text (SH holds 16)


def _csv_rows():
    """The table as the package ships it, found the way `serving.deid` finds it."""
    text = resources.files("serving").joinpath(PROFILE_FILE).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _anonymizer_2026c():
    """dicom-anonymizer's transcription of the 2026c table, "(gggg,eeee)" -> Basic Profile code."""
    lists = {"D": "D_TAGS", "Z": "Z_TAGS", "X": "X_TAGS", "U": "U_TAGS", "Z/D": "Z_D_TAGS",
             "X/Z": "X_Z_TAGS", "X/D": "X_D_TAGS", "X/Z/D": "X_Z_D_TAGS",
             "X/Z/U*": "X_Z_U_STAR_TAGS"}
    table = {}
    for action, name in lists.items():
        for entry in getattr(dicomfields_2026c, name):
            group, element = f"{entry[0]:04X}", f"{entry[1]:04X}"
            if len(entry) == 4:  # (group, element, group mask, element mask): a repeating group
                group = group[:2] + "xx"
                element = element if entry[3] == 0xFFFF else "xxxx"
            table[f"({group},{element})"] = action
    return table


def test_the_table_is_package_data_with_one_row_per_attribute():
    rows = _csv_rows()
    assert list(rows[0]) == ["keyword", "tag", "action", "name", "in_pydicom"]
    assert len(rows) == len(PROFILE) == 656  # 653 attributes and 3 repeating groups
    assert len({r["tag"] for r in rows}) == len(rows)
    assert len({r["keyword"] for r in rows}) == len(rows)
    assert {r["keyword"]: ProfileAttribute(r["keyword"], r["tag"], r["action"], r["name"],
                                           r["in_pydicom"] == "yes") for r in rows} == PROFILE
    assert {r["in_pydicom"] for r in rows} == {"yes", "no"}
    assert {r["action"] for r in rows} == ACTIONS
    assert [r["tag"] for r in rows if "x" in r["tag"]] == ["(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"]


def test_profile_rows_match_the_dicom_dictionary():
    for keyword, row in PROFILE.items():
        if row.repeating:
            assert repeater_has_keyword(keyword), keyword
        elif row.in_pydicom:
            assert tag_for_keyword(keyword) == row.number, (keyword, row.tag)
            assert dictionary_description(row.number) == row.name, row
        else:  # newer than pydicom: neither the tag nor the keyword is in its dictionary
            assert not dictionary_has_tag(row.number) and tag_for_keyword(keyword) is None, row
            assert keyword == "".join(w[0].upper() + w[1:] for w in row.name.split()), row
    assert {k for k, row in PROFILE.items() if not row.in_pydicom} == NEWER_THAN_PYDICOM


def test_profile_matches_an_independent_transcription_of_the_2026c_table():
    theirs = _anonymizer_2026c()
    ours = {row.tag: row.action for row in PROFILE.values()}
    assert len(theirs) == 655
    # Every row of theirs is ours, with the same code. Where our first transcription (2023
    # editions) differed, PatientID and the 7 rows in NAMED_ROWS below it, the 2026c text agrees
    # with theirs.
    assert {tag: ours.get(tag) for tag in theirs} == theirs
    # Our only extra row: Dose Calculation Model Name, which PS3.15 2026d adds.
    assert {tag: a for tag, a in ours.items() if tag not in theirs} == {"(3004,007F)": "X"}
    # Rows of our first transcription that no edition since 2023 has (PS3.15-2011 had them):
    # dropped, as are ContextGroupExtensionCreatorUID, CreatorVersionUID, SoftwareVersions and
    # ModifyingDeviceManufacturer from PROFILE.
    assert not {"(0008,010D)", "(0008,9123)", "(0018,1020)", "(0020,3404)"} & set(ours)


def test_profile_holds_the_attributes_the_standard_removes_or_replaces():
    assert {k: PROFILE[k].action for k in NAMED_ROWS} == NAMED_ROWS
    assert set(PROFILE) == PHI_KEYS
    # Every UID that identifies an instance, series, study or frame of reference is replaced
    # (Affected SOP Instance UID, a DIMSE command attribute, is removed instead)...
    assert all(PROFILE[k].action == "U" for k in PROFILE
               if k.endswith("InstanceUID") and k != "AffectedSOPInstanceUID")
    assert PROFILE["AffectedSOPInstanceUID"].action == "X"
    # ...while class UIDs, which name a kind of object, are kept.
    assert "SOPClassUID" not in PROFILE and "TransferSyntaxUID" not in PROFILE


def test_allow_list_is_technical_known_and_outside_the_profile():
    assert not set(ALLOWED_ATTRIBUTES) & set(PROFILE)
    assert all(tag_for_keyword(k) is not None for k in ALLOWED_ATTRIBUTES)
    assert "SeriesDescription" not in ALLOWED_ATTRIBUTES
    assert {"Modality", "Manufacturer", "SliceThickness", "KVP"} <= set(ALLOWED_ATTRIBUTES)


@pytest.mark.parametrize("keyword", sorted(PROFILE))
def test_image_refuses_every_profile_attribute_unless_allowed(keyword):
    with pytest.raises(DataError, match=rf"must not hold patient-identifying tags.*\['{keyword}'\]"):
        Image(np.zeros((2, 2)), (1, 1), metadata={keyword: "x"})
    allowed = Image(np.zeros((2, 2)), (1, 1), metadata={keyword: "x", PHI_ALLOWED_KEY: [keyword]})
    assert allowed.metadata[keyword] == "x"


def test_reader_keeps_the_allow_list_and_drops_every_profile_attribute(tmp_path):
    folder = write_dicom_series(_ct(), tmp_path / "ct")
    written = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for i, keyword in enumerate(_plain_profile_keywords()):
            if keyword not in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                               "FrameOfReferenceUID"):  # keep the series a series
                setattr(ds, keyword, _value(keyword, i))
                written[keyword] = _value(keyword, i)
        ds.BodyPartExamined, ds.ConvolutionKernel, ds.KVP = "CHEST", "B30f", "120"
        ds.save_as(path)
    image = read_dicom_series(folder)
    meta = image.metadata
    assert not set(meta) & set(PROFILE)
    assert set(meta) <= set(ALLOWED_ATTRIBUTES) | {"NumberOfSlices"}
    assert meta["BodyPartExamined"] == "CHEST" and meta["ConvolutionKernel"] == "B30f"
    assert meta["KVP"] == 120.0 and meta["Modality"] == "CT" and meta["Manufacturer"] == "kerasmed"
    text = repr(meta)
    assert "Quixote" not in text and "19230417" not in text and "Rocinante" not in text
    assert len(written) > 150  # most of the table was in the file
    single = read_dicom_file(folder / "IM0001.dcm")
    assert not set(single.metadata) & set(PROFILE) and "Rocinante" not in repr(single.metadata)


def test_allow_copies_named_attributes_and_records_them(tmp_path):
    folder = write_dicom_series(_ct(), tmp_path / "ct", series_description="Quixote follow-up")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientAge, ds.SeriesNumber = "099Y", 7
        ds.save_as(path)
    image = read_image(folder, allow=["SeriesDescription", "PatientAge", "Laterality"])
    assert image.metadata["SeriesDescription"] == "Quixote follow-up"
    assert image.metadata["PatientAge"] == "099Y" and image.metadata["SeriesNumber"] == 7
    assert image.metadata[PHI_ALLOWED_KEY] == ["SeriesDescription", "PatientAge"]
    assert "Laterality" not in image.metadata  # allowed but absent: nothing to copy
    assert "SeriesDescription" not in read_image(folder).metadata  # the default leaves it out


@pytest.mark.parametrize(("allow", "match"), [
    ("SeriesDescription", r"a list of DICOM keywords.*Received: allow='SeriesDescription' \(a single"),
    (["SeriesDescriptoin"], r"keywords as pydicom spells them.*Received: 'SeriesDescriptoin'"),
    (["OtherPatientIDsSequence"], r"plain value only.*Received: 'OtherPatientIDsSequence' \(VR SQ\)"),
    ([3], r"Received: 3"),
])
def test_allow_refuses_what_is_not_a_plain_keyword(tmp_path, allow, match):
    with pytest.raises(ConfigError, match=match):
        check_allow(allow)
    with pytest.raises(ConfigError, match=match):
        read_dicom_series(tmp_path, allow=allow)  # checked before the folder is read


def test_notes_never_carry_profile_values(tmp_path):
    """Notes may name files, and a folder named after the patient is redacted from them."""
    study = tmp_path / "study"
    folder = write_dicom_series(_ct(), study / "ct")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = "Quixote^Alonso", "MRN-55501"
        ds.save_as(path)
    report = get_testdata_file("reportsi.dcm", download=False)
    assert report is not None, "pydicom's test files must be installed"
    (study / "Quixote MRN-55501").mkdir()
    shutil.copy(report, study / "Quixote MRN-55501" / "report.dcm")
    notes = read_dicom_series(study).metadata["notes"]
    assert len(notes) == 1 and notes[0].startswith("skipped `[removed] [removed]/report.dcm`")
    assert "Quixote" not in repr(notes) and "MRN" not in repr(notes)


def test_redact_removes_long_values_whole_and_ignores_short_ones():
    assert redact("Doe^Jane at Doe clinic, sex M", ["Doe^Jane", "Doe", "M"]) == (
        "[removed] at [removed] clinic, sex M")


def test_notes_drop_values_of_attributes_newer_than_pydicom(tmp_path):
    """Name to Use (0010,0012) is in the 2026c table but not in pydicom 3.0.2's dictionary: its
    value is found by tag and redacted like any other."""
    study = tmp_path / "study"
    folder = write_dicom_series(_ct(), study / "ct")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.add_new(PROFILE["NameToUse"].number, "LO", "Dulcinea")
        ds.save_as(path)
    (study / "Dulcinea").mkdir()
    shutil.copy(get_testdata_file("reportsi.dcm", download=False), study / "Dulcinea" / "report.dcm")
    image = read_dicom_series(study)
    assert image.metadata["notes"][0].startswith("skipped `[removed]/report.dcm`")
    assert "Dulcinea" not in repr(image.metadata)
