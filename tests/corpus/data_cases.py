"""Corpus cases: data."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ConfigError, DataError
from serving.image import Image
from tests.corpus.harness import (
    CASES,
    Api,
    Case,
    Work,
    case,
)

# --- data -----------------------------------------------------------------------------------------

def _manifest_case(w: Work, text: str | bytes, needles: tuple) -> Api:
    from kerasmed.data.manifest import read_manifest

    data = w.path / "data"
    data.mkdir()
    for name in ("a.npy", "m.npy"):
        np.save(data / name, np.zeros((2, 8, 8), np.float32))
    w.file("data/manifest.csv", text)
    path = data / "manifest.csv"
    return Api(lambda: read_manifest(data), DataError,
               tuple(n.replace("<path>", str(path)) for n in needles))


HEADER = "case_id,image_path,mask_path,split\n"
MANIFEST_CASES = [
    ("empty-file", "", ("Manifest <path> is not a readable CSV", "Received:")),
    # A missing `split` column is no error (the cases are split by `data.split`); a mask column is.
    ("missing-column", "case_id,image_path,split\nc0,a.npy,train\n",
     ("Manifest <path> must have columns", "'mask_path'",
      "Received: columns=['case_id', 'image_path', 'split']")),
    ("no-rows", HEADER, ("Manifest <path> lists no cases", "Received: 0 rows")),
    ("unknown-split", HEADER + "c0,a.npy,m.npy,training\n",
     ("Manifest <path>: `split` must be one of ('train', 'val', 'test')",
      "Received: 'training' for case 'c0' (line 2)")),
    ("duplicate-case-id", HEADER + "c0,a.npy,m.npy,train\nc0,a.npy,m.npy,val\n",
     ("Manifest <path>: case ids must be unique", "Received: 'c0' (line 3), first (line 2)")),
    ("empty-mask-path-cell", HEADER + "c0,a.npy,m.npy,train\nc1,a.npy,,val\n",
     ("Manifest <path>: `mask_path` must name a file in every row",
      "Received: an empty `mask_path` cell for case 'c1' (line 3)")),
    ("empty-image-path-cell", HEADER + "c0, ,m.npy,train\n",
     ("`image_path` must name a file in every row", "case 'c0' (line 2)")),
    ("missing-image-file", HEADER + "c0,gone.npy,m.npy,train\n",
     ("Manifest <path>: `image_path` of case c0 does not exist", "gone.npy")),
    ("non-utf8", (HEADER + "c0,a.npy,m.npy,train\nc1,caf\xe9.npy,m.npy,val\n").encode("latin-1"),
     ("Manifest <path> is not a readable CSV", "Received:")),
    ("unclosed-quote", HEADER + 'c0,"a.npy,m.npy,train\n',
     ("Manifest <path>", "Received:")),
]
for _id, _text, _needles in MANIFEST_CASES:
    CASES.append(Case(f"data/manifest-{_id}", lambda w, t=_text, n=_needles: _manifest_case(w, t, n)))


@case("data/manifest-data-folder-missing")
def _(w):
    from kerasmed.data.manifest import read_manifest

    root = w.path / "nowhere"
    return Api(lambda: read_manifest(root), DataError, ("Data folder not found", f"Received: {root}"))


@case("data/manifest-file-missing")
def _(w):
    from kerasmed.data.manifest import read_manifest

    (w.path / "data").mkdir()
    return Api(lambda: read_manifest(w.path / "data"), DataError,
               ("Manifest not found", f"Received: {w.path / 'data' / 'manifest.csv'}"))


def _read(path: Path, **kwargs) -> Callable[[], Any]:
    from serving.io import read_image

    return lambda: read_image(path, **kwargs)


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@case("data/npy-missing")
def _(w):
    path = w.path / "gone.npy"
    return Api(_read(path), DataError,
               ("`path` must be an existing .npy file", f"Received: path={str(path)!r}"))


@case("data/npy-truncated")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.zeros((4, 16, 16), np.float32))[:200])
    return Api(_read(path), DataError, (f"`{path}` must be a complete .npy array file", "Received:"))


@case("data/npy-pickled-objects")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.array([{"a": 1}, None], dtype=object)))
    return Api(_read(path), DataError, (f"`{path}` must be a complete .npy array file",
                                        "object arrays are refused", "Received:"))


@case("data/npy-4d")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.zeros((2, 2, 8, 8), np.float32)))
    return Api(_read(path), DataError, (f"`{path}` must hold a 2D (y, x) or 3D (z, y, x) numeric array",
                                        "Received: shape=(2, 2, 8, 8)"))


@case("data/npy-strings")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.full((4, 8, 8), "1.5")))
    return Api(_read(path), DataError, (f"`{path}`", "numeric array", "dtype=<U3"))


@case("data/npy-complex")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.zeros((4, 8, 8), np.complex64)))
    return Api(_read(path), DataError, (f"`{path}`", "numeric array", "dtype=complex64"))


@case("data/npy-one-nan-voxel")
def _(w):
    array = np.zeros((4, 8, 8), np.float32)
    array[2, 4, 4] = np.nan
    path = w.file("x.npy", _npy_bytes(array))
    return Api(_read(path), DataError, (f"Image `{path}` must be finite",
                                        "Received: 1 NaN and 0 inf values in a (4, 8, 8) float32 array"))


@case("data/npy-infinities")
def _(w):
    array = np.zeros((4, 8, 8), np.float64)
    array[0, 0, 0], array[3, 7, 7] = np.inf, -np.inf
    path = w.file("x.npy", _npy_bytes(array))
    return Api(_read(path), DataError, (f"Image `{path}` must be finite", "0 NaN and 2 inf values"))


@case("data/image-unknown-suffix")
def _(w):
    path = w.file("scan.mha", b"ObjectType = Image\n")
    return Api(_read(path), DataError, (f"Unknown image format for `{path}`", "Received: suffix='.mha'"))


@case("data/png-zero-byte")
def _(w):
    path = w.file("scan.png", b"")
    return Api(_read(path), DataError, (f"`{path}` must be a complete PNG, JPEG or TIFF image",
                                        "Received: UnidentifiedImageError"))


@case("data/rgb-where-grey-required")
def _(w):
    import PIL.Image

    from serving.io import read_image, write_nifti

    path = w.path / "photo.png"
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    out = w.path / "photo.nii.gz"
    return Api(lambda: write_nifti(read_image(path), out), DataError,
               (f"Writing NIfTI `{out}` requires a grey image",
                "Received: an RGB image (3 channels), array shape=(8, 8, 3)"))


@case("data/tiff-truncated")
def _(w):
    import io

    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(np.arange(4096, dtype=np.uint16).reshape(64, 64)).save(buffer, format="TIFF")
    path = w.file("scan.tif", buffer.getvalue()[:4000])
    return Api(_read(path), DataError,
               (f"`{path}` must be a complete TIFF image that tifffile can read", "Received: ValueError"))


@case("data/image-format-unknown")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.zeros((4, 8, 8), np.float32)))
    return Api(_read(path, format="mha"), ConfigError,
               ("Unknown image format `mha`; valid names: [", "'npy', 'npz', 'png', 'tiff']",
                "Received: 'mha'"))


def _nifti(w: Work, rel: str, array, spacing=(2.5, 1.0, 1.0)) -> Path:
    from serving.io import write_nifti

    path = w.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(Image(array, spacing=spacing), path)
    return path


@case("data/nifti-truncated")
def _(w):
    path = _nifti(w, "x.nii.gz", np.random.default_rng(0).normal(size=(4, 32, 32)).astype(np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Api(_read(path), DataError, (str(path), "Received:"))


@case("data/nifti-not-nifti")
def _(w):
    path = w.file("x.nii", b"this is not a NIfTI header" * 20)
    return Api(_read(path), DataError, (str(path), "Received:"))


@case("data/nifti-one-nan-voxel")
def _(w):
    array = np.zeros((4, 8, 8), np.float32)
    array[1, 2, 3] = np.nan
    path = _nifti(w, "x.nii.gz", array)
    return Api(_read(path), DataError, (f"Image `{path}` must be finite", "Received: 1 NaN and 0 inf"))


def _dicom_folder(w: Work) -> Path:
    return w.data() / "cases" / "case_000" / "dicom"


@case("data/dicom-200-byte-file")
def _(w):
    folder = _dicom_folder(w)
    slice_ = sorted(folder.iterdir())[0]
    short = w.file("short/IM0001.dcm", slice_.read_bytes()[:200])
    # It used to be reported as lacking SeriesInstanceUID, which sent users after the wrong tag.
    return Api(_read(short.parent), DataError, (f"`{short}`", "truncated or corrupt", "Received:"),
               absent=("lacks ['SeriesInstanceUID']",))


@case("data/dicom-empty-folder")
def _(w):
    folder = w.path / "series"
    folder.mkdir()
    return Api(_read(folder), DataError, ("`folder` contains no DICOM files", f"{str(folder)!r} (empty)"))


@case("data/dicom-text-file")
def _(w):
    path = w.file("series/notes.txt", "not a slice\n")
    return Api(_read(path.parent), DataError, ("must be a DICOM", f"`{path}`", "Received:"))


@case("data/dicom-pixels-cut-short")
def _(w):
    path = sorted(_dicom_folder(w).iterdir())[5]
    path.write_bytes(path.read_bytes()[:-300])
    return Api(_read(path.parent), DataError, (f"`{path}`", "truncated", "Received:"))


@case("data/dicom-missing-slice")
def _(w):
    folder = _dicom_folder(w)
    sorted(folder.iterdir())[5].unlink()
    return Api(_read(folder), DataError, ("Slice gaps of a series must be uniform", "missing slice",
                                          str(folder), "Received: gaps from"))


@case("data/dicom-duplicate-slice")
def _(w):
    folder = _dicom_folder(w)
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "IM0001-copy.dcm")
    return Api(_read(folder), DataError, ("must have distinct positions", "coincide", "Received: position"))


@case("data/dicom-two-series")
def _(w):
    folder = _dicom_folder(w)
    other = sorted((folder.parents[1] / "case_001" / "dicom").iterdir())[0]
    shutil.copy(other, folder / "IM9999.dcm")
    return Api(_read(folder), DataError, (str(folder), "holds 2 series", "Received: series_uid=None"))


@case("data/mask-of-another-shape")
def _(w):
    from kerasmed.data.manifest import check_case_geometry

    image = Image(np.zeros((4, 32, 32), np.float32), spacing=(2.5, 1.0, 1.0))
    mask = Image(np.zeros((4, 32, 30), np.uint8), spacing=(2.5, 1.0, 1.0))
    return Api(lambda: check_case_geometry(image, mask, "c0", "c0_mask.nii.gz"), DataError,
               ("Mask of case c0 must share the image geometry", "mask shape=(4, 32, 30)", "c0_mask.nii.gz"))


@case("data/image-spacing-zero")
def _(w):
    return Api(lambda: Image(np.zeros((4, 8, 8)), spacing=(1.0, 0.0, 1.0)), DataError,
               ("`spacing` must have 3 positive values", "Received: spacing=(1.0, 0.0, 1.0)"))


@case("data/image-patient-name")
def _(w):
    return Api(lambda: Image(np.zeros((4, 8, 8)), spacing=(1, 1, 1), metadata={"PatientName": "Doe"}),
               DataError, ("`metadata` must not hold patient-identifying tags", "Received: ['PatientName']"))


def _generate(root: Path, **kwargs) -> Callable[[], Any]:
    from kerasmed.data.generate import generate_dataset

    params = {"num_cases": 2, "shape": (4, 32, 32), "progress": False, **kwargs}
    return lambda: generate_dataset(root, **params)


@case("data/generate-into-a-users-folder")
def _(w):
    w.file("data/scans/IM0001.dcm", b"\0" * 300)
    w.file("data/labels.csv", "case,label\na,1\n")
    return Api(_generate(w.path / "data"), DataError,
               ("Dataset folder `root` must be absent, empty or a finished dataset", "no .kerasmed marker",
                "--overwrite", f"Received: {w.path / 'data'} holding 'labels.csv', 'scans'"))


@case("data/generate-root-is-a-file")
def _(w):
    path = w.file("data", "mine")
    return Api(_generate(path), DataError,
               ("Dataset folder `root` must be a folder", f"Received: {path} is a file"))


@case("data/generate-one-case")
def _(w):
    return Api(_generate(w.path / "data", num_cases=1), ConfigError,
               ("`num_cases` must be at least 2", "Received: num_cases=1"))


@case("data/generate-split-fractions")
def _(w):
    return Api(_generate(w.path / "data", split_fractions=(0.5, 0.6, -0.1)), ConfigError,
               ("`split_fractions` must be 3 non-negative numbers",
                "Received: split_fractions=(0.5, 0.6, -0.1)"))


@case("data/run-folder-holding-a-finished-run")
def _(w):
    from kerasmed.run import check_run_dir

    run = w.run_folder()
    return Api(lambda: check_run_dir(run), ConfigError,
               ("The run folder must not hold a finished run", "`kerasmed train --overwrite`",
                f"Received: {run} holding model.keras and train_summary.json"))


@case("data/run-folder-without-model")
def _(w):
    from kerasmed.run import load_run

    run = w.run_folder()
    (run / "model.keras").unlink()
    return Api(lambda: load_run(run), DataError, ("Run folder has no model.keras", f"Received: {run}"))


@case("data/run-model-truncated")
def _(w):
    from kerasmed.run import load_run

    run = w.run_folder(model=b"PK\x03\x04" + bytes(300))
    return Api(lambda: load_run(run), DataError,
               (f"`{run / 'model.keras'}` must be a readable .keras archive", "truncated or corrupt",
                "Received: a 304-byte file that is not a zip archive"), absent=("File not found",))
