"""Seeded fuzzing of the readers and the bundle loader (issue 6, slow tier).

Every target gets at least 1,000 mutated inputs (`N_MUTATIONS`); the only outcomes allowed are a
valid result or a `KerasmedError`. Anything else that escapes (a `KeyError`, `OverflowError`,
`RecursionError`...) is a bug: each test collects every such crash, prints the counts and then
fails listing every crash class with reproducers. A valid Image holds finite real voxels, positive
spacing and a finite origin and direction; a valid Bundle loads and its manifest-backed accessors
return or raise a `KerasmedError`.

The mutator is a plain seeded byte-level one (no new dependency): 1-3 operations per input, drawn
from bit flips, byte overwrites, "interesting" little/big-endian ints and floats (0, -1, extremes,
NaN, inf), truncation, chunk deletion and duplication, insertion of random bytes, and replacing a
number written in ASCII (DICOM DS/IS values, CSV and JSON numbers) with an odd token ("NaN",
"1e999", "-0", ""...). Offsets fall in the header (before the DICOM pixel data, the NIfTI header)
three times in four, where the parsing happens, instead of mostly hitting voxel values.
`manifest.json` is fuzzed both at the byte level and structurally (keys deleted, renamed, retyped,
odd artefact paths, duplicated artefacts), plus edits that keep the bundle valid, which must load.

Every case is a pure function of its index and the seed files (`dicom_file_case`,
`dicom_series_case`, `nifti_case`, `csv_case`, `json_case`), so a failure, which names
`target#index`, its seed file and operations, is reproduced by calling that function with the
index, e.g. `nifti_case(345, seeds)`.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import math
import re
import shutil
import struct
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from serving.errors import KerasmedError

BASE_SEED = 6  # issue 6
N_MUTATIONS = 2000  # per target: the acceptance criterion asks for at least 1,000
TARGETS = {"dicom-file": 1, "dicom-series": 2, "nifti": 3, "manifest-csv": 4, "manifest-json": 5}
REPO = Path(__file__).resolve().parents[2]
# A mutated header may declare a gigantic image; a reader must refuse it, not allocate it. The cap
# turns such an allocation into a MemoryError (a reported crash) instead of a machine brought down.
MEMORY_HEADROOM = 4 << 30

# ---------------------------------------------------------------------------------------------
# The byte-level mutator.

_INTERESTING = (
    [bytes([v]) for v in (0x00, 0x01, 0x7F, 0x80, 0xFF)]
    + [struct.pack(e + "h", v) for e in "<>" for v in (0, -1, 1, 0x7FFF, -0x8000, 0x100)]
    + [struct.pack(e + "i", v) for e in "<>" for v in (0, -1, 0x7FFFFFFF, -0x80000000, 0x10000)]
    + [
        struct.pack(e + "f", v)
        for e in "<>"
        for v in (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e38, 1e-45)
    ]
)
TOKENS = (
    b"", b"0", b"-0", b"-1", b"1e999", b"-1e999", b"NaN", b"nan", b"inf", b"-inf", b"Infinity",
    b"1e-320", b"99999999999999999999999", b"0.0\\0.0", b" ", b"\\", b"\x00", b"x", b"1" * 5000,
)
_NUMBER = re.compile(rb"[-+]?[0-9][0-9.eE+-]*")


def _offset(buf: bytearray, rng: np.random.Generator, hot: int | None, bias: float = 0.75) -> int:
    """A position in `buf`, inside the first `hot` bytes with probability `bias`."""
    if hot and rng.random() < bias:
        return int(rng.integers(min(hot, len(buf))))
    return int(rng.integers(len(buf)))


def _flip(buf, rng, hot):
    where = []
    for _ in range(int(rng.integers(1, 9))):
        o, bit = _offset(buf, rng, hot), int(rng.integers(8))
        buf[o] ^= 1 << bit
        where.append(f"{o}.{bit}")
    return "flip@" + ",".join(where)


def _overwrite(buf, rng, hot):
    o = _offset(buf, rng, hot)
    n = min(int(rng.integers(1, 9)), len(buf) - o)
    buf[o : o + n] = rng.bytes(n)
    return f"overwrite@{o}+{n}"


def _interesting(buf, rng, hot):
    value = _INTERESTING[int(rng.integers(len(_INTERESTING)))]
    o = _offset(buf, rng, hot)
    n = min(len(value), len(buf) - o)
    buf[o : o + n] = value[:n]
    return f"interesting@{o}={value.hex()}"


def _truncate(buf, rng, hot):
    o = _offset(buf, rng, hot, bias=0.5)
    del buf[o:]
    return f"truncate@{o}"


def _delete(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 65))
    del buf[o : o + n]
    return f"delete@{o}+{n}"


def _duplicate(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 129))
    chunk = bytes(buf[o : o + n])
    to = _offset(buf, rng, hot)
    buf[to:to] = chunk
    return f"duplicate@{o}+{len(chunk)}->{to}"


def _insert(buf, rng, hot):
    o, n = _offset(buf, rng, hot), int(rng.integers(1, 65))
    buf[o:o] = rng.bytes(n)
    return f"insert@{o}+{n}"


def _token(buf, rng, hot, tokens=TOKENS):
    numbers = list(_NUMBER.finditer(bytes(buf[: hot or len(buf)])))
    if not numbers:
        return _overwrite(buf, rng, hot)
    m = numbers[int(rng.integers(len(numbers)))]
    token = tokens[int(rng.integers(len(tokens)))]
    buf[m.start() : m.end()] = token
    return f"token@{m.start()}:{m.group()[:20]!r}->{token[:20]!r}"


BYTE_OPS = (_flip, _overwrite, _interesting, _truncate, _delete, _duplicate, _insert, _token)


def mutate(data: bytes, rng: np.random.Generator, hot: int | None = None) -> tuple[bytes, list[str]]:
    """Apply 1-3 random byte-level operations to `data`.

    Args:
        data: the seed file's bytes.
        rng: the case's generator (all randomness comes from it).
        hot: length of the header region that most offsets fall in (None: the whole file).

    Returns:
        `(mutated bytes, descriptions of the operations)`.
    """
    buf = bytearray(data)
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        if not buf:
            buf[:] = rng.bytes(int(rng.integers(1, 17)))
            ops.append(f"refill+{len(buf)}")
            continue
        ops.append(BYTE_OPS[int(rng.integers(len(BYTE_OPS)))](buf, rng, hot))
    return bytes(buf), ops


def case_rng(target: str, index: int) -> np.random.Generator:
    return np.random.default_rng([BASE_SEED, TARGETS[target], index])


def _pick(seq, rng):
    return seq[int(rng.integers(len(seq)))]


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def test_mutations_are_seeded_and_change_the_bytes():
    data = bytes(range(256)) * 8
    a = [mutate(data, np.random.default_rng([BASE_SEED, i]), hot=100) for i in range(50)]
    b = [mutate(data, np.random.default_rng([BASE_SEED, i]), hot=100) for i in range(50)]
    assert a == b
    assert sum(m != data for m, _ in a) >= 45
    assert {op.split("@")[0] for _, ops in a for op in ops} >= {"flip", "truncate", "insert", "token"}


# ---------------------------------------------------------------------------------------------
# Running cases and collecting outcomes.


def _where(err: BaseException) -> str:
    """`file:line` of the innermost project frame of `err` (else the innermost frame)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename
            and not f.filename.endswith("test_fuzz.py")]
    frame = (ours or frames)[-1]
    name = Path(frame.filename)
    name = name.relative_to(REPO) if name.is_relative_to(REPO) else name.name
    return f"{name}:{frame.lineno}"


def _rule(err: BaseException) -> str:
    """The rule an error states: its message before "Received", paths and numbers blanked."""
    text = str(err).split("Received")[0]
    text = re.sub(r"`[^`]*/[^`]*`|'[^']*/[^']*'|(?<![\w`'])/[^\s`',:]+", "<path>", text)
    text = re.sub(r"\d+", "#", text)
    return f"{type(err).__name__}: {' '.join(text.split())[:100]}"


class Outcomes:
    """Counts of valid results and refusals by error type; every crash, with its reproducer."""

    def __init__(self, target: str):
        self.target = target
        self.valid = 0
        self.refused: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()  # refusals by rule, to show what was reached
        self.crashes: list[tuple[str, str, str]] = []  # (class, case, message)
        self.warnings: Counter[str] = Counter()
        self.notes: list[str] = []
        self.slowest = (0.0, "")

    @property
    def total(self) -> int:
        return self.valid + sum(self.refused.values()) + len(self.crashes)

    def run(self, case: str, call, check, must_succeed: bool = False) -> None:
        """Run `call()`; a `KerasmedError` is a refusal, any other exception a crash, and a
        result is valid when `check(result)` returns no problem (a string)."""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            # Warnings are counted, not turned into errors: the contract is about exceptions.
            warnings.simplefilter("always")
            try:
                result = call()
            except KerasmedError as err:
                if must_succeed:
                    self.crashes.append(("valid input refused", case, f"{type(err).__name__}: {err}"))
                else:
                    self.refused[type(err).__name__] += 1
                    self.reasons[_rule(err)] += 1
                result = None
            except Exception as err:  # noqa: BLE001 - any non-contract exception is the finding
                kind = f"{type(err).__name__} at {_where(err)}"
                self.crashes.append((kind, case, f"{type(err).__name__}: {err}"))
                result = None
            else:
                problem = check(result)
                if problem:
                    self.crashes.append(("invalid result", case, problem))
                else:
                    self.valid += 1
        for w in caught:
            self.warnings[f"{w.category.__name__} from {Path(w.filename).name}:{w.lineno}"] += 1
        elapsed = time.perf_counter() - start
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, case)

    def report(self) -> str:
        lines = [
            f"fuzz {self.target}: {self.total} mutations: {self.valid} valid, "
            f"refused {dict(sorted(self.refused.items()))}, {len(self.crashes)} crashes; "
            f"slowest case {self.slowest[0]:.2f} s ({self.slowest[1]})"
        ]
        if self.warnings:
            lines.append(f"  warnings leaked: {dict(self.warnings.most_common())}")
        lines.append(f"  {len(self.reasons)} distinct refusal rules; most frequent:")
        lines.extend(f"    {n:5d}  {rule}" for rule, n in self.reasons.most_common(8))
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)

    def crash_report(self) -> str:
        by_kind: dict[str, list[tuple[str, str]]] = {}
        for kind, case, message in self.crashes:
            by_kind.setdefault(kind, []).append((case, message))
        lines = [f"{len(self.crashes)} of {self.total} {self.target} mutations escaped the error "
                 f"contract, in {len(by_kind)} classes:"]
        for kind, cases in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"- {len(cases)}x {kind}")
            for case, message in cases[:3]:
                lines.append(f"    {case}\n      -> {message[:300]}")
            if len(cases) > 3:
                ids = ", ".join(c.split(" ")[0] for c, _ in cases[3:])
                lines.append(f"    also: {ids[:2000]}")
        return "\n".join(lines)

    def finish(self, capsys) -> None:
        with capsys.disabled():
            print("\n" + self.report())
        assert not self.crashes, self.crash_report()


@contextlib.contextmanager
def quiet(*loggers: str):
    """Silence third-party loggers (pydicom logs every damaged element) for the loop; the
    outcomes, not the log, are what the test checks."""
    import logging

    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)  # children without a level of their own follow
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM):
    """Cap this process's address space at its current size plus `headroom` (Linux), so that a
    reader asked by a mutated header for tens of GB fails with MemoryError instead of taking the
    shared machine's memory."""
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        yield
        return
    status = Path("/proc/self/status")
    match = re.search(r"VmSize:\s+(\d+) kB", status.read_text()) if status.exists() else None
    if match is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = int(match.group(1)) * 1024 + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ---------------------------------------------------------------------------------------------
# Seeds: sample files shipped with pydicom and nibabel, and files the project writes.

# Single-frame CT/MR files that `read_image` reads today (explicit/implicit VR, big endian, RLE).
PYDICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm",
                 "MR_small_implicit.dcm", "MR_small_RLE.dcm")
NIBABEL_SEEDS = ("anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz")


def _pydicom_file(name: str) -> Path:
    # The files ship inside the wheel; looking them up in place never triggers a download.
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"pydicom's wheel must ship its test file {name}: {path}"
    return path


def _nibabel_file(name: str) -> Path:
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / name
    assert path.is_file(), f"nibabel's wheel must ship its test file {name}: {path}"
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A tiny synthetic dataset written by the project: DICOM series, NIfTI masks, manifest.csv."""
    from kerasmed.data.generate import generate_dataset

    manifest = generate_dataset(tmp_path_factory.mktemp("fuzz") / "data", num_cases=3, seed=0,
                                shape=(8, 32, 32), progress=False)
    return manifest.parent


def _dicom_hot(data: bytes) -> int:
    """End of the header region of a DICOM file: just past the PixelData element's header and
    the first bytes of its value (RLE offset table, encapsulation items)."""
    tag = max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))
    return (tag if tag >= 0 else len(data)) + 96


# Structure-aware mutations: what byte flips rarely produce (a DS value of "nan", 3 orientation
# values, Rows = 0, a transfer syntax that does not match the data).
_UIDS = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
         "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5", "1.2.3.4", "")
DICOM_TAG_VALUES = {
    "Rows": (0, 1, 65535),
    "Columns": (0, 1, 65535),
    "BitsAllocated": (0, 1, 8, 12, 32, 64),
    "BitsStored": (0, 1, 17, 64),
    "HighBit": (0, 15, 40),
    "PixelRepresentation": (0, 1, 2),
    "SamplesPerPixel": (0, 3, 4),
    "PlanarConfiguration": (0, 1, 2),
    "PhotometricInterpretation": ("RGB", "PALETTE COLOR", "YBR_FULL", "MONOCHROME1", ""),
    "NumberOfFrames": ("0", "2", "-1", "99999"),
    "PixelSpacing": (["nan", "1"], ["0", "0"], ["-1", "1"], ["1"], ["inf", "inf"], ["1", "1", "1"],
                     ["1e-320", "1"], []),
    "ImagePositionPatient": (["nan", "0", "0"], ["0", "0"], ["1e308", "-1e308", "0"],
                             ["inf", "0", "0"], ["0", "0", "0", "0"], []),
    "ImageOrientationPatient": (["1", "0", "0"], ["1", "0", "0", "1", "0", "0"], ["0"] * 6,
                                ["nan"] * 6, ["1", "0", "0", "0", "1", "0", "0"],
                                ["1e308", "0", "0", "0", "1e308", "0"], ["1e-200"] * 6, []),
    "SliceThickness": ("0", "-1", "nan", "inf", "1e-320", ""),
    "SpacingBetweenSlices": ("0", "-1", "nan", "inf", "1e-320", ""),
    "RescaleSlope": ("0", "nan", "inf", "1e38", "-1", ""),
    "RescaleIntercept": ("nan", "inf", "1e38", ""),
    "SeriesInstanceUID": ("", "1.2.3"),
    "Modality": ("", "SEG", "XXXXXXXXXXXXXXXX"),
    "PixelData": ("empty", "one byte", "half", "double"),
    "TransferSyntaxUID": _UIDS,
}


def dicom_tag_mutation(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]] | None:
    """Set 1-2 pixel or geometry tags to odd values (or delete them) and re-encode the file as it
    was encoded; None when pydicom cannot parse or write it (the caller mutates bytes instead)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our own writing of odd values, not the reader's
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            implicit, little = ds.original_encoding
        except Exception:  # noqa: BLE001 - a seed pydicom cannot round-trip is not fuzzed this way
            return None
        ops = []
        for _ in range(int(rng.integers(1, 3))):
            tag = _pick(sorted(DICOM_TAG_VALUES), rng)
            value = _pick(DICOM_TAG_VALUES[tag], rng)
            if tag == "TransferSyntaxUID":
                ds.file_meta.TransferSyntaxUID = value
            elif tag == "PixelData":
                pixels = ds.get("PixelData") or b""
                ds.PixelData = {"empty": b"", "one byte": b"\0", "half": pixels[: len(pixels) // 2],
                                "double": pixels * 2}[value]
            elif rng.random() < 0.15:
                if tag in ds:
                    del ds[tag]
                value = "<deleted>"
            else:
                setattr(ds, tag, value)
            ops.append(f"{tag}={_short(value)}")
        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(buf, ds, implicit_vr=implicit, little_endian=little,
                             force_encoding=True)
        except Exception:  # noqa: BLE001
            return None
    return buf.getvalue(), ops


def dicom_mutation(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """A third of the time tag-level (`dicom_tag_mutation`), else byte-level."""
    if rng.random() < 1 / 3 and (tagged := dicom_tag_mutation(data, rng)) is not None:
        return tagged
    return mutate(data, rng, _dicom_hot(data))


# NIfTI-1 header fields: (name, offset, struct code, count).
NIFTI_FIELDS = (
    ("sizeof_hdr", 0, "i", 1), ("dim", 40, "h", 8), ("intent_p", 56, "f", 3),
    ("datatype", 70, "h", 1), ("bitpix", 72, "h", 1), ("pixdim", 76, "f", 8),
    ("vox_offset", 108, "f", 1), ("scl_slope", 112, "f", 1), ("scl_inter", 116, "f", 1),
    ("qform_code", 252, "h", 1), ("sform_code", 254, "h", 1), ("quatern", 256, "f", 3),
    ("qoffset", 268, "f", 3), ("srow", 280, "f", 12), ("magic", 344, "4s", 1),
)
NIFTI_VALUES = {
    "h": (0, 1, -1, 2, 3, 4, 7, 8, 9, 16, 64, 128, 255, 511, 2048, 32767, -32768),
    "i": (0, 1, -1, 540, 348 * 256, 2**31 - 1),
    "f": (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3e38, -3e38, 1e30, 0.5),
    "4s": (b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0"),
}


def nifti_header_mutation(raw: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]] | None:
    """Set 1-3 NIfTI-1 header fields (one element each) to odd values; None if not NIfTI-1."""
    if len(raw) < 348:
        return None
    order = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(order + "i", raw[:4])[0] != 348:
        return None
    buf = bytearray(raw)
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        name, offset, code, count = _pick(NIFTI_FIELDS, rng)
        element = int(rng.integers(count))
        value = _pick(NIFTI_VALUES[code], rng)
        size = struct.calcsize(code)
        at = offset + element * size
        buf[at : at + size] = struct.pack(order + code, value)
        ops.append(f"{name}[{element}]={value!r}")
    return bytes(buf), ops


def _valid_image(image) -> str | None:
    from serving.image import Image

    if not isinstance(image, Image):
        return f"not an Image: {type(image).__name__}"
    array = image.array
    if array.ndim not in (2, 3) or array.size == 0:
        return f"shape {array.shape}"
    if array.dtype.kind not in "biuf" or not np.isfinite(array.astype(np.float64, copy=False)).all():
        return f"array not finite real numbers (dtype={array.dtype})"
    if len(image.spacing) != array.ndim or not all(math.isfinite(s) and s > 0 for s in image.spacing):
        return f"spacing {image.spacing}"
    # A NaN origin or direction would pass into every physical coordinate (nodule centres in mm,
    # the affine of a written mask), so an Image that holds one is not a valid result either.
    if not (np.isfinite(image.origin).all() and np.isfinite(image.direction).all()):
        return f"non-finite geometry: origin={image.origin}, direction={image.direction.tolist()}"
    return None


def _read_checked(outcomes: Outcomes, case: str, path: Path) -> None:
    from serving.io import read_image

    outcomes.run(case, lambda: read_image(path), _valid_image)


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


# ---------------------------------------------------------------------------------------------
# Targets.


def dicom_file_case(index: int, seeds: dict[str, bytes]) -> tuple[str, bytes, list[str]]:
    """Case `index` of the DICOM file fuzzer: `(seed name, bytes, operations)`."""
    rng = case_rng("dicom-file", index)
    name = _pick(sorted(seeds), rng)
    return (name, *dicom_mutation(seeds[name], rng))


def dicom_series_case(index: int, slices: dict[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """Case `index` of the series fuzzer: `({file name: bytes}, operations)`. One slice in ten is
    removed, doubled or joined by a stray file; otherwise one (or, one time in five, two)
    slices are mutated."""
    rng = case_rng("dicom-series", index)
    names = sorted(slices)
    files = dict(slices)
    ops = []
    draw = rng.random()
    if draw < 0.1:
        victim = _pick(names, rng)
        how = _pick(("remove", "double", "stray"), rng)
        if how == "remove":
            del files[victim]
        elif how == "double":
            files["copy_" + victim] = files[victim]
        else:
            files["notes.txt"] = rng.bytes(int(rng.integers(0, 300)))
        ops.append(f"{how} {victim}")
    for _ in range(2 if draw > 0.8 else (1 if draw >= 0.1 else 0)):
        victim = _pick(names, rng)
        files[victim], victim_ops = dicom_mutation(files[victim], rng)
        ops.append(f"{victim}: {victim_ops}")
    return files, ops


@pytest.mark.slow
def test_fuzz_dicom_file(tmp_path, generated, capsys):
    """One mutated slice in a series folder of its own (the reader's per-file path)."""
    seeds = {name: _pydicom_file(name).read_bytes() for name in PYDICOM_SEEDS}
    seeds["generated IM0001.dcm"] = (generated / "cases/case_000/dicom/IM0001.dcm").read_bytes()
    folder = tmp_path / "series"
    folder.mkdir()
    outcomes = Outcomes("dicom-file")
    with memory_cap(), quiet("pydicom", "nibabel"):
        for i in range(N_MUTATIONS):
            name, data, ops = dicom_file_case(i, seeds)
            (folder / "slice.dcm").write_bytes(data)
            _read_checked(outcomes, f"dicom-file#{i} seed={name} ops={ops}", folder)
    outcomes.finish(capsys)


@pytest.mark.slow
def test_fuzz_dicom_series(tmp_path, generated, capsys):
    """A generated 8-slice series, damaged by `dicom_series_case`."""
    source = generated / "cases/case_000/dicom"
    slices = {p.name: p.read_bytes() for p in sorted(source.iterdir())}
    folder = tmp_path / "series"
    folder.mkdir()
    outcomes = Outcomes("dicom-series")
    with memory_cap(), quiet("pydicom", "nibabel"):
        for i in range(N_MUTATIONS):
            files, ops = dicom_series_case(i, slices)
            _clear(folder)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            _read_checked(outcomes, f"dicom-series#{i} ops={ops}", folder)
    outcomes.finish(capsys)


def _nifti_hot(raw: bytes) -> int:
    """End of the NIfTI header and extensions: `vox_offset` (the header is 348 bytes, NIfTI-2 540)."""
    import nibabel as nib

    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    return max(int(header.get_data_offset()), 352)


def nifti_case(index: int, seeds: dict[str, bytes]) -> tuple[str, bytes, list[str]]:
    """Case `index` of the NIfTI fuzzer: `(seed name, bytes, operations)`. A third of the time
    header fields (`nifti_header_mutation`), else bytes with offsets mostly in the header; a
    .nii.gz is mutated before compression (so its header is damaged, not only the gzip stream),
    except a quarter of the time, when its compressed bytes are."""
    rng = case_rng("nifti", index)
    name = _pick(sorted(seeds), rng)
    compressed = name.endswith(".gz")
    if compressed and rng.random() < 0.25:
        data, ops = mutate(seeds[name], rng, None)
        return name, data, ["compressed bytes", *ops]
    raw = gzip.decompress(seeds[name]) if compressed else seeds[name]
    header = nifti_header_mutation(raw, rng) if rng.random() < 1 / 3 else None
    data, ops = header or mutate(raw, rng, _nifti_hot(raw))
    return name, gzip.compress(data, compresslevel=1, mtime=0) if compressed else data, ops


@pytest.mark.slow
def test_fuzz_nifti(tmp_path, generated, capsys):
    from serving.io import write_nifti
    from tests.helpers import synthetic_ct

    seeds = {name: _nibabel_file(name).read_bytes() for name in NIBABEL_SEEDS}
    seeds["generated nodules.nii.gz"] = (generated / "cases/case_000/nodules.nii.gz").read_bytes()
    seeds["written ct.nii"] = write_nifti(synthetic_ct(), tmp_path / "ct.nii").read_bytes()
    outcomes = Outcomes("nifti")
    with memory_cap(), quiet("pydicom", "nibabel"):
        for i in range(N_MUTATIONS):
            name, data, ops = nifti_case(i, seeds)
            path = tmp_path / ("fuzz.nii.gz" if name.endswith(".gz") else "fuzz.nii")
            path.write_bytes(data)
            _read_checked(outcomes, f"nifti#{i} seed={name} ops={ops}", path)
    outcomes.finish(capsys)


@pytest.mark.parametrize(
    "field, offset, code, value, rule",
    [
        # 2 GB declared by a 25 KB file: refused before nibabel allocates it (it used to allocate,
        # then find the data missing: seconds and gigabytes per file).
        ("dim", 40, "<4h", (3, 32767, 32767, 1), "holding the voxel data its header declares"),
        ("dim", 40, "<4h", (3, 0, 32, 6), "at least one voxel"),  # found by the fuzzer
        ("srow_x", 280, "<f", math.nan, "finite 4x4 affine"),  # found by the fuzzer
    ],
)
def test_nifti_header_fuzz_findings_are_refused(tmp_path, field, offset, code, value, rule):
    from serving.errors import DataError
    from serving.io import read_image, write_nifti
    from tests.helpers import synthetic_ct

    path = write_nifti(synthetic_ct(), tmp_path / "ct.nii")
    raw = bytearray(path.read_bytes())
    packed = struct.pack(code, *value) if isinstance(value, tuple) else struct.pack(code, value)
    raw[offset : offset + len(packed)] = packed
    path.write_bytes(raw)
    with memory_cap(headroom=1 << 30), pytest.raises(DataError, match=re.escape(rule)) as info:
        read_image(path)
    assert "\n" not in str(info.value)


CSV_CELLS = (
    b"", b" ", b"..", b"/etc/passwd", b"a\x00b", b"x" * 300, b"cases/" + b"a/" * 3000, b"TRAIN",
    b"val ", b'"', b'"a,b"', b"\xff\xfe", b"case_000", b"cases", b"nan", b"NA", b"\r", b"\t",
    b"cases/case_000/dicom/../dicom", b"cases/case_001/nodules.nii.gz", b"~", b"\\\\server\\x",
)


def csv_case(index: int, data: bytes) -> tuple[bytes, list[str]]:
    """Case `index` of the manifest.csv fuzzer: `(bytes, operations)`. Half byte-level, half
    cell-level: replace a cell with an odd value, drop or double a row, drop a column."""
    rng = case_rng("manifest-csv", index)
    if rng.random() < 0.5:
        return mutate(data, rng, None)
    lines = data.split(b"\n")
    ops = []
    for _ in range(int(rng.integers(1, 3))):
        if not lines:
            break
        row = int(rng.integers(len(lines)))
        how = rng.random()
        if how < 0.6:
            cells = lines[row].split(b",")
            col = int(rng.integers(len(cells)))
            cells[col] = CSV_CELLS[int(rng.integers(len(CSV_CELLS)))]
            lines[row] = b",".join(cells)
            ops.append(f"cell[{row},{col}]={cells[col][:20]!r}")
        elif how < 0.75:
            lines.insert(row, lines[row])
            ops.append(f"double row {row}")
        elif how < 0.9:
            del lines[row]
            ops.append(f"drop row {row}")
        else:
            col = int(rng.integers(5))
            lines = [b",".join(c for j, c in enumerate(line.split(b",")) if j != col) for line in lines]
            ops.append(f"drop column {col}")
    return b"\n".join(lines), ops


@pytest.mark.slow
def test_fuzz_manifest_csv(generated, capsys):
    """Mutated copies of the generated manifest.csv, read by `read_manifest` in the dataset root."""
    import pandas as pd

    from kerasmed.data.manifest import REQUIRED_COLUMNS, read_manifest

    seed = (generated / "manifest.csv").read_bytes()
    name = "fuzz_manifest.csv"
    outcomes = Outcomes("manifest-csv")

    def check(df):
        if not isinstance(df, pd.DataFrame) or df.empty:
            return f"not a non-empty DataFrame: {type(df).__name__}"
        if any(c not in df.columns for c in REQUIRED_COLUMNS):
            return f"columns {list(df.columns)}"
        if not all(Path(p).exists() for p in df["image_path"]):
            return "an image_path does not exist"
        return None

    for i in range(N_MUTATIONS):
        data, ops = csv_case(i, seed)
        (generated / name).write_bytes(data)
        outcomes.run(f"manifest-csv#{i} ops={ops}", lambda: read_manifest(generated, name), check)
    outcomes.finish(capsys)


# ---------------------------------------------------------------------------------------------
# manifest.json: byte-level and structured mutations of a copied bundle's manifest.

# Values written where the schema expects something else. "@@...@@" strings become raw JSON
# text after dumping: integers json.dumps cannot write, and nesting deeper than any parser stack.
_ODD_VALUES = (
    None, True, False, 0, -1, 1.5, math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, 1e308,
    "@@BIG@@", "@@HUGE@@", "@@DEEP@@", "", " ", "x" * 10000, "\u0000", "\ud800", "../x", "onnx",
    [], [None], ["a", 1], {}, {"": None}, {"format": "onnx"},
)
_RAW = {
    '"@@BIG@@"': "1" + "0" * 400,  # parses, but overflows float()
    '"@@HUGE@@"': "9" * 5000,  # beyond Python's int string-conversion limit
    '"@@DEEP@@"': "[" * 100_000 + "]" * 100_000,
}
ODD_FILES = (
    "../x", "../../etc/passwd", "/etc/passwd", "", "a\u0000b", "x" * 300, "a/" * 3000,
    "C:\\model.onnx", "C:model.onnx", "\\\\server\\share\\x", "model.onnx/", ".", "./",
    "saved_model/../model.onnx", "manifest.json", "saved_model", "model.onnx\n", " model.onnx",
    "\ud800", "nonexistent.onnx", "~/x", "//etc/passwd", "file:///etc/passwd",
    "saved_model/variables", "saved_model/saved_model.pb", "\u00e9.onnx",
)
_IMPORTANT = (
    ("task",), ("input",), ("artefacts",), ("class_names",), ("postprocessing",), ("parity",),
    ("postprocessing", "threshold"), ("input", "preprocessing"),
    ("input", "preprocessing", "target_spacing"), ("input", "preprocessing", "size"),
    ("input", "preprocessing", "pad_value"), ("name",),
)
_ARTEFACT_FIELDS = ("format", "key", "precision", "converter", "file", "sha256")


def _slots(node, out: list) -> list:
    """Every `(container, key)` under `node`, depth first."""
    if isinstance(node, dict):
        for k in list(node):
            out.append((node, k))
            _slots(node[k], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _slots(node[i], out)
    return out


def _odd_value(rng):
    # A copy: the constants' lists and dicts must not be shared, or mutated by a later edit.
    return copy.deepcopy(_pick(_ODD_VALUES, rng))


def _artefacts(m) -> list:
    a = m.get("artefacts") if isinstance(m, dict) else None
    return [e for e in a if isinstance(e, dict)] if isinstance(a, list) else []


def _breaking_op(m, rng) -> tuple[object, str]:
    """One schema-breaking (or at least suspicious) edit of the parsed manifest `m`."""
    how = int(rng.integers(9))
    entries = _artefacts(m)
    if how == 0 and isinstance(m, dict):
        path = _pick(_IMPORTANT, rng)
        node = m
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            value = _odd_value(rng)
            node[path[-1]] = value
            return m, f"{'.'.join(path)}={_short(value)}"
    if how == 1 and entries:
        entry, field = _pick(entries, rng), _pick(_ARTEFACT_FIELDS, rng)
        value = _odd_value(rng)
        entry[field] = value
        return m, f"artefact.{field}={_short(value)}"
    if how == 2 and entries:
        entry, value = _pick(entries, rng), _pick(ODD_FILES, rng)
        entry["file"] = value
        return m, f"artefact.file={_short(value)}"
    if how == 3 and entries:
        entry = _pick(entries, rng)
        sha = entry.get("sha256") if isinstance(entry.get("sha256"), str) else "0" * 64
        value = _pick((sha.upper(), sha[:63], rng.bytes(32).hex(), sha + "0",
                       _pick(entries, rng).get("sha256")), rng)
        entry["sha256"] = value
        return m, f"artefact.sha256={_short(value)}"
    if how == 4 and isinstance(m.get("artefacts") if isinstance(m, dict) else None, list) and entries:
        m["artefacts"].append(copy.deepcopy(_pick(entries, rng)))
        return m, "duplicate artefact"
    slots = _slots(m, [])
    if how == 5 and slots:
        parent, key = _pick(slots, rng)
        del parent[key]
        return m, f"delete {key!r}"
    dict_slots = [(p, k) for p, k in slots if isinstance(p, dict)]
    if how == 6 and dict_slots:
        parent, key = _pick(dict_slots, rng)
        new = _pick((key + "_", key.upper(), "", " " + key, key[:-1]), rng)
        parent[new] = parent.pop(key)
        return m, f"rename {key!r}->{new!r}"
    if how == 7:
        value = _odd_value(rng)
        return value, f"root={_short(value)}"
    if slots:
        parent, key = _pick(slots, rng)
        value = _odd_value(rng)
        parent[key] = value
        return m, f"[{key!r}]={_short(value)}"
    return _odd_value(rng), "root replaced"


def _valid_op(m, rng) -> str:
    """One edit that keeps a valid manifest valid (the bundle must still load)."""
    entries = m["artefacts"]
    how = int(rng.integers(9))
    if how == 0:
        m["extra_" + rng.bytes(3).hex()] = _pick((1, "x", [1, 2], {"a": None}, None), rng)
        return "extra top-level key"
    if how == 1:
        m["name"] = "n\u00e9 " + rng.bytes(4).hex()
        return "rename bundle"
    if how == 2:
        order = rng.permutation(len(entries))
        m["artefacts"] = [entries[j] for j in order]
        return f"reorder artefacts {order.tolist()}"
    if how == 3 and len(entries) > 1:
        dropped = entries.pop(int(rng.integers(len(entries))))
        return f"drop artefact {artefact_key_of(dropped)}"
    if how == 4:
        entry = _pick(entries, rng)
        entry["file"] = "./" + entry["file"]
        return f"file {entry['file']}"
    if how == 5:
        m["class_names"] = [rng.bytes(2).hex() for _ in range(int(rng.integers(0, 4)))]
        return "class names"
    if how == 6:
        m.setdefault("postprocessing", {})["threshold"] = float(rng.random())
        return "threshold"
    if how == 7:
        entry = _pick(entries, rng)
        entry["key"] = "k_" + rng.bytes(4).hex()
        return "new artefact key"
    m["parity"] = {"verdict": _pick(("pass", "fail", "not_run", "?"), rng)}
    return "parity"


def artefact_key_of(entry) -> str:
    return entry.get("key", entry.get("format"))


def _dump(m, rng) -> bytes:
    text = json.dumps(m, indent=_pick((None, 2, 4), rng), ensure_ascii=bool(rng.random() < 0.7))
    for sentinel, raw in _RAW.items():
        text = text.replace(sentinel, raw)
    return text.encode("utf-8", "surrogatepass")


def json_case(index: int, seed_text: bytes) -> tuple[bytes, list[str], bool]:
    """Case `index` of the manifest.json fuzzer: `(bytes, operations, must_load)`.

    Even cases are byte-level mutations of the text; odd ones structured: a third of those keep
    the manifest valid (must load), the rest apply 1-3 breaking edits."""
    rng = case_rng("manifest-json", index)
    if index % 2 == 0:
        data, ops = mutate(seed_text, rng, None)
        return data, ops, False
    m = json.loads(seed_text)
    if rng.random() < 1 / 3:
        ops = [_valid_op(m, rng) for _ in range(int(rng.integers(1, 4)))]
        return _dump(m, rng), ops, True
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        m, op = _breaking_op(m, rng)
        ops.append(op)
    return _dump(m, rng), ops, False


ACCESSORS = ("name", "task", "class_names", "preprocess_spec", "postprocess", "threshold",
             "parity", "artefact_keys")


def _use_bundle(bundle, refusals: Counter):
    """Touch every manifest-backed accessor of a loaded bundle: each must return or raise a
    KerasmedError (counted in `refusals`, the bundle still counts as loaded)."""
    for name in ACCESSORS:
        try:
            getattr(bundle, name)
        except KerasmedError as err:
            refusals[f"{name}: {type(err).__name__}"] += 1
    repr(bundle)
    return bundle


@pytest.mark.slow
def test_fuzz_bundle_manifest_json(bundle_dir, tmp_path, capsys):
    from serving.bundle import Bundle, load_bundle

    bundle = shutil.copytree(bundle_dir, tmp_path / "bundle")
    seed_text = (bundle / "manifest.json").read_bytes()
    outcomes = Outcomes("manifest-json")
    loaded_by_kind: Counter[str] = Counter()
    accessor_refusals: Counter[str] = Counter()

    def check(result):
        return None if isinstance(result, Bundle) else f"not a Bundle: {type(result).__name__}"

    for i in range(N_MUTATIONS):
        data, ops, must_load = json_case(i, seed_text)
        (bundle / "manifest.json").write_bytes(data)
        kind = "byte" if i % 2 == 0 else ("keep-valid" if must_load else "structured")
        before = outcomes.valid
        outcomes.run(f"manifest-json#{i} ({kind}) ops={ops}",
                     lambda: _use_bundle(load_bundle(bundle), accessor_refusals), check,
                     must_succeed=must_load)
        loaded_by_kind[kind] += outcomes.valid - before
    outcomes.notes.append(f"loaded by kind: {dict(loaded_by_kind)}; accessors of loaded bundles "
                          f"that refused: {dict(accessor_refusals)}")
    outcomes.finish(capsys)
