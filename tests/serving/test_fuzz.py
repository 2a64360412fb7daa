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

import gzip
import io
import math
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.serving.fuzzing import (
    BASE_SEED,
    N_MUTATIONS,
    Outcomes,
    _pick,
    _short,
    case_rng,
    memory_cap,
    mutate,
    quiet,
)


def test_mutations_are_seeded_and_change_the_bytes():
    data = bytes(range(256)) * 8
    a = [mutate(data, np.random.default_rng([BASE_SEED, i]), hot=100) for i in range(50)]
    b = [mutate(data, np.random.default_rng([BASE_SEED, i]), hot=100) for i in range(50)]
    assert a == b
    assert sum(m != data for m, _ in a) >= 45
    assert {op.split("@")[0] for _, ops in a for op in ops} >= {"flip", "truncate", "insert", "token"}



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
    if image.ndim not in (2, 3) or array.size == 0:
        return f"shape {array.shape}"
    if image.channels > 1 and array.shape[-1] != image.channels:  # colour: channels last
        return f"channels {image.channels} but shape {array.shape}"
    if array.dtype.kind not in "biuf" or not np.isfinite(array.astype(np.float64, copy=False)).all():
        return f"array not finite real numbers (dtype={array.dtype})"
    if len(image.spacing) != image.ndim or not all(math.isfinite(s) and s > 0 for s in image.spacing):
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
