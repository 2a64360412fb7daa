"""No PHI, by the PS3.15 Basic Confidentiality Profile (issue 7): a DICOM dataset carrying a
patient's name, ID, birth date, institution and free-text descriptions goes through check-data ->
preprocess -> train (tiny) -> evaluate -> export -> compare with the `kerasmed` commands, and none
of those values appears in any output file (zip archives opened), nor in what the commands print.
Case ids, which a manifest may take from patient IDs, are kept out of the bundle, and so are local
paths."""

import csv
import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pydicom

from export.demo import PROFILES
from kerasmed.cli import main
from kerasmed.config import load_config
from kerasmed.data.generate import generate_dataset
from serving.bundle import load_bundle
from tests.helpers import assert_one_line_error

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"
# Written into every DICOM file; PS3.15 Table E.1-1 removes or replaces each of these attributes.
PHI_TAGS = {
    "PatientName": "Quixote^Alonso",
    "PatientID": "PHI-4711-QX",
    "PatientBirthDate": "19230417",
    "InstitutionName": "Hospital de la Mancha Norte",
    "SeriesDescription": "CHEST Quixote follow-up Rocinante",
    "StudyDescription": "Lungs review Barataria",
    "ReferringPhysicianName": "Panza^Sancho",
    "OperatorsName": "Lorenzo^Aldonza",
    "AccessionNumber": "ACC-55931",
    "StationName": "CT-TOBOSO-1",
    "StudyDate": "20190312",
    "ImageComments": "seen by Dr Carrasco",
}
# Every value, and every part of a person name, that must not leave the input files.
PHI_VALUES = sorted({*PHI_TAGS.values(), "Quixote", "Alonso", "Panza", "Sancho", "Lorenzo",
                     "Aldonza", "Mancha", "Rocinante", "Barataria", "TOBOSO", "Carrasco"})


def _blobs(path: Path):
    """`(name, bytes)` of a file and, for a zip archive (`.keras`) or gzip file, its content."""
    data = path.read_bytes()
    yield str(path), data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}!{member}", archive.read(member)
    elif data[:2] == b"\x1f\x8b":
        yield f"{path}!gunzip", gzip.decompress(data)


def _found(folders, needles) -> list[str]:
    """`file: needle` for every needle (case-insensitive) in any file under `folders`."""
    hits = []
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            for name, data in _blobs(path):
                lowered = data.lower()
                hits += [f"{name}: {n}" for n in needles if n.lower().encode() in lowered]
    return hits


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _patient_dataset(data: Path) -> dict[str, str]:
    """Put PHI into every DICOM file and patient-ID-like case ids into the manifest; returns the
    new case ids by old."""
    for path in sorted(data.glob("cases/*/dicom/*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in PHI_TAGS.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = {row["case_id"]: f"MRN-{i:05d}" for i, row in enumerate(rows, 91007)}
    for row in rows:
        row["case_id"] = ids[row["case_id"]]
    with open(data / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return ids


def test_patient_identifiers_reach_no_output_and_case_ids_no_bundle(tmp_path, capfd):
    data, runs, cache = tmp_path / "data", tmp_path / "runs", tmp_path / "cache"
    sets = []
    for override in [*PROFILES["tiny"], f"data.root={data}", f"output_dir={runs}",
                     f"data.cache_dir={cache}"]:
        sets += ["--set", override]
    s = load_config(CONFIG, sets[1::2]).synthetic
    generate_dataset(data, num_cases=s.num_cases, seed=s.seed, shape=s.shape,
                     split_fractions=s.split_fractions, progress=False)
    case_ids = list(_patient_dataset(data).values())
    assert len(_found([data / "cases"], PHI_VALUES)) > len(PHI_VALUES)  # the search sees them
    capfd.readouterr()

    run = runs / "lung_nodule_seg_2d"
    assert main(["check-data", str(CONFIG), *sets]) == 0
    assert main(["preprocess", str(CONFIG), *sets, "--workers", "2"]) == 0
    assert main(["train", str(CONFIG), *sets]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert main(["export", str(run)]) == 0
    # Without --data: the bundle, where it was exported, finds the data it came from.
    assert main(["compare", str(run / "bundle")]) == 0
    printed = capfd.readouterr()
    assert "parity: PASS" in printed.out, printed.out

    # Nothing identifying in any output file (the cache, the run, its bundle), nor in what the
    # commands printed. The evaluation metrics name the user's case ids: outside the bundle.
    assert any(cache.rglob("*.npy")) and (run / "bundle" / "parity" / "parity.json").is_file()
    assert (data / "check" / "summary.md").is_file() and (run / "fingerprint.json").is_file()
    assert _found([cache, run, data / "check"], PHI_VALUES) == []
    shown = (printed.out + printed.err).lower()
    assert [v for v in PHI_VALUES if v.lower() in shown] == []
    assert any(c in (run / "eval" / "metrics.csv").read_text() for c in case_ids)

    # The bundle, which ships to devices: no case id, no local path.
    bundle = run / "bundle"
    assert _found([bundle], [*case_ids, str(tmp_path)]) == []
    manifest = json.loads((bundle / "manifest.json").read_text())
    for text in _strings(manifest):
        assert not text.startswith(("/", "\\", "~")) and text[1:3] not in (":\\", ":/"), text
    assert manifest["extra"]["data_root"] == "../../../data"
    parity = json.loads((bundle / "parity" / "parity.json").read_text())
    assert parity["cases"] == ["#0", "#1"] and parity["bundle"] == "bundle"
    assert set(parity["artefacts"]["onnx"]["agreement"]) == {"#0", "#1"}

    # Moved away from its data, the bundle asks for --data in one line, and works with it.
    moved = shutil.copytree(bundle, tmp_path / "device" / "bundle")
    capfd.readouterr()
    code = main(["compare", str(moved), "--formats", "onnx", "--max-cases", "1"])
    printed = capfd.readouterr()
    assert_one_line_error(_Proc(code, printed.err), "records its validation data at "
                          "`../../../data` relative to the bundle folder", "pass --data")
    assert main(["compare", str(moved), "--data", str(data), "--formats", "onnx",
                 "--max-cases", "1"]) == 0
    assert load_bundle(moved).parity["verdict"] == "pass"


class _Proc:
    """What `assert_one_line_error` reads from a finished process."""

    def __init__(self, returncode, stderr):
        self.returncode, self.stderr, self.stdout = returncode, stderr, ""
