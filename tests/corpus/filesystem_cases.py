"""Corpus cases: the file system says no (issue 16, item 4), and a damaged cache (item 5).

A full disk is a file-size limit on the command's process (`Cli.file_size_limit`, RLIMIT_FSIZE):
a write past it fails with EFBIG as one on a full disk fails with ENOSPC, and kerasmed reports
both as "no space left". A read-only folder is a `chmod a-w` tree. Root ignores file modes, so
under root (as in this project's CI container) the command runs `unprivileged`: its subprocess
drops the capabilities that let root write there (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
CAP_FOWNER) before `kerasmed` starts, and the folder refuses it as it refuses any user. A chmod
gives EACCES ("permission denied"); a read-only mount (EROFS, "read-only") needs root to make, so
no case here has one: both take the same path (`serving.errors.StorageError`), and
tests/serving/test_errors_storage.py checks the EROFS wording. A path that is a file stands in
for "not a folder".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from export.demo import PROFILES
from kerasmed.config import load_config
from serving.errors import DataError
from tests.corpus.harness import (
    CONFIG,
    Api,
    Cli,
    Work,
    case,
)

TINY = tuple(a for o in PROFILES["tiny"] for a in ("--set", o))
NO_SPACE = "no space left"


def _data_sets(data: Path, *extra: str) -> tuple:
    return (*TINY, "--set", f"data.root={data}", *(a for o in extra for a in ("--set", o)))


def _build_cache(data: Path, *extra: str):
    """The tiny profile's preprocessed cache of `data` (default: under it), built here."""
    from kerasmed.training.inputs import preprocess_dataset

    config = load_config(CONFIG, [*PROFILES["tiny"], f"data.root={data}", *extra])
    return preprocess_dataset(config, workers=1, progress=False)


def _read_only(path: Path) -> Path:
    """Take write permission away from `path` and everything under it (folders and files)."""
    no_write = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    for parent, dirs, files in os.walk(path, topdown=False):  # a folder's entries before it
        for name in dirs + files:
            entry = Path(parent, name)
            entry.chmod(entry.stat().st_mode & no_write)
    path.chmod(path.stat().st_mode & no_write)
    return path


# --- a full disk (RLIMIT_FSIZE) ---------------------------------------------------------------------

@case("cli/generate-no-space-left")
def _(w: Work):
    # Each DICOM slice is 18 kB: the first one fails; the half-written dataset is deleted.
    data = w.path / "data"
    return Cli(("generate", CONFIG, *_data_sets(data)),
               (f"Cannot write {data}/cases/case_000", NO_SPACE, "[Errno 27] File too large"),
               absent=(".tmp-",), file_size_limit=8192)


@case("cli/preprocess-no-space-left")
def _(w: Work):
    # A cached image is 442 kB: the first case fails, naming it; no half-written case stays
    # (the empty spec folder with its marker is the cache's own, and is reused by a rerun).
    data = w.data()
    return Cli(("preprocess", CONFIG, *_data_sets(data), "--workers", "1"),
               ("Case case_00", f"Cannot write {data / 'cache'}/", "/cases/", NO_SPACE),
               absent=(".tmp-",), outputs=("data/cache",), file_size_limit=65536)


@case("cli/train-no-space-left-for-the-checkpoint")
def _(w: Work):
    # The cache is built; the run's first large file is its 266 kB checkpoint. The run folder
    # holds no model.keras and no train_summary.json: it never looks finished.
    data = w.data()
    _build_cache(data)
    run = w.path / "run"
    return Cli(("train", CONFIG, *_data_sets(data), "--run-dir", run),
               (f"Cannot write {run / 'checkpoints' / 'best.keras'}", NO_SPACE),
               absent=(".tmp-",), outputs=("run",), in_process=True, file_size_limit=65536)


@case("cli/export-no-space-left")
def _(w: Work):
    # model.keras (175 kB) is the bundle's first artefact; the half-written bundle is deleted.
    run = w.run_folder()
    return Cli(("export", run), (f"Cannot write {run / 'bundle'}", NO_SPACE),
               absent=(".tmp-",), in_process=True, file_size_limit=65536)


@case("cli/export-saved-model-no-space-left")
def _(w: Work):
    # TensorFlow's C++ writer (SavedModel variables) reports "<path>; File too large" with no
    # errno: the same one line, naming the file under the bundle.
    run = w.run_folder()
    return Cli(("export", run, "--formats", "saved_model"),
               (f"Cannot write {run / 'bundle' / 'saved_model'}", NO_SPACE),
               absent=(".tmp-",), in_process=True, file_size_limit=65536)


@case("cli/compare-no-space-left")
def _(w: Work):
    # Parity runs, then its report cannot be written. (ONNX only: LiteRT prints an INFO line
    # to stderr when its first interpreter starts.)
    bundle = w.bundle()
    return Cli(("compare", bundle, "--data", w.data(), "--formats", "onnx", "--max-cases", "1"),
               (f"Cannot write {bundle / 'parity_narrower'}", NO_SPACE),
               absent=(".tmp-",), outputs=("bundle/parity_narrower",), in_process=True,
               file_size_limit=4096)


@case("cli/evaluate-no-space-left")
def _(w: Work):
    run = w.run_folder(data=w.data())
    return Cli(("evaluate", run), (f"Cannot write {run / 'eval'}", NO_SPACE),
               absent=(".tmp-",), in_process=True, file_size_limit=4096)


@case("cli/check-data-no-space-left")
def _(w: Work):
    # histogram.png (the report's largest file) fails. The report is written whole into a
    # temporary folder and renamed (kerasmed.data.check), so nothing of it is left.
    report = w.path / "report"
    return Cli(("check-data", CONFIG, *_data_sets(w.data()), "--output", report),
               (f"Cannot write {report}", NO_SPACE), absent=(".tmp-",), file_size_limit=4096)


# --- read-only folders, and a file where a folder must be --------------------------------------------

@case("cli/preprocess-read-only-dataset-default-cache")
def _(w: Work):
    data = _read_only(w.data())
    return Cli(("preprocess", CONFIG, *_data_sets(data), "--workers", "1"),
               ("Cannot write the preprocessed cache (`data.cache_dir`, default <data.root>/cache) at "
                f"{data / 'cache'}", "permission denied"),
               unprivileged=True)


@case("cli/preprocess-read-only-complete-cache-is-used-as-it-is")
def _(w: Work):
    # Not an error: every case is built and intact, so nothing needs writing (no lock file, no
    # index) and the cache is read as it is.
    data = w.data()
    report = _build_cache(data)
    _read_only(data)
    return Cli(("preprocess", CONFIG, *_data_sets(data), "--workers", "1"),
               (f"cache: {report.folder}  cases: 0 built, 4 reused", f"index: {report.index}"),
               code=0, unprivileged=True)


@case("cli/compare-read-only-bundle-default-output")
def _(w: Work):
    # Refused before TensorFlow loads and before any artefact runs, not after the whole check.
    bundle = _read_only(w.bundle())
    return Cli(("compare", bundle),
               ("The bundle folder (`compare` writes its report in BUNDLE/parity unless --output is "
                f"given) must be writable, but {bundle} is not (permission denied)",),
               unprivileged=True)


@case("cli/preprocess-cache-dir-is-a-file")
def _(w: Work):
    path = w.file("cache.txt", "mine")
    return Cli(("preprocess", CONFIG, *_data_sets(w.data(), f"data.cache_dir={path}")),
               (f"Cannot write the preprocessed cache (`data.cache_dir`, default <data.root>/cache) at "
                f"{path}: not a folder (it is a file)",))


@case("cli/train-cache-dir-is-a-file")
def _(w: Work):
    # The run folder is not touched: the cache comes first.
    path = w.file("cache.txt", "mine")
    return Cli(("train", CONFIG, *_data_sets(w.data(), f"data.cache_dir={path}"),
                "--run-dir", w.path / "run"),
               (f"at {path}: not a folder (it is a file)",), in_process=True)


# --- a damaged cache: `load_cache` refuses it, naming the case ----------------------------------------

def _damaged_cache(w: Work, damage) -> Api:
    from kerasmed.data.cache import load_cache

    report = _build_cache(w.data())
    cases = report.folder / "cases"
    index = (report.index / "index.csv").read_text().splitlines()[1:]
    folders = {line.split(",")[0]: cases / line.split(",")[-1].split("/")[-1] for line in index}
    needles = damage(folders)
    return Api(lambda: load_cache(report.index), DataError,
               ("must match what was recorded when it was built", "run `kerasmed preprocess CONFIG`",
                *needles))


def _truncate(folders):
    image = folders["case_000"] / "image.npy"
    image.write_bytes(image.read_bytes()[:-4096])
    return ("Cached case case_000", "image.npy is 438400 bytes, recorded 442496", str(folders["case_000"]))


def _reshape(folders):
    # The same bytes under another shape: (12, 96, 96) -> (24, 48, 96), size unchanged.
    import numpy as np

    image = folders["case_001"] / "image.npy"
    array = np.load(image)
    np.save(image, array.reshape(24, 48, 96))
    return ("Cached case case_001",
            "image.npy holds a (24, 48, 96) float32 array, recorded (12, 96, 96) float32")


def _swap(folders):
    # Two cases' images exchanged: same sizes, same headers, other content.
    a, b = folders["case_000"] / "image.npy", folders["case_001"] / "image.npy"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert len(data_a) == len(data_b) and data_a != data_b
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    return ("Cached case case_000", "image.npy differs from its recorded content (sampled sha256)")


def _swap_folders(folders):
    # Two whole case folders exchanged: each meta.json now records the other's key.
    a, b = folders["case_000"], folders["case_001"]
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    return ("Cached case case_000", f"meta.json records case key {b.name}, but the folder is {a.name}")


for _name, _damage in (("truncated", _truncate), ("reshaped", _reshape), ("swapped-images", _swap),
                       ("swapped-folders", _swap_folders)):
    case(f"data/cache-{_name}-case-refused-by-load_cache")(
        lambda w, d=_damage: _damaged_cache(w, d))


@case("cli/explain-no-space-left")
def _(w: Work):
    # A tiny untrained classifier's run; the first overlay PNG passes the 4 KiB limit. Saliency
    # maps are written into a temporary folder and renamed, so nothing of them is left.
    import yaml

    from kerasmed.models.registry import build_model
    from serving.image import Image
    from serving.io import write_nifti

    raw = yaml.safe_load((CONFIG.parent / "nodule_cls.yaml").read_text())
    raw["preprocessing"]["size"] = [None, 32, 32]
    raw["model"].update(context_slices=1, filters=4, depth=2)
    run = w.run_folder(config=yaml.safe_dump(raw, sort_keys=False).encode(),
                       model=b"replaced below")
    build_model("cnn", input_shape=(None, None, 1), filters=4, depth=2).save(run / "model.keras")
    image = w.path / "patch.nii.gz"
    array = np.full((1, 32, 32), -800.0, np.float32)
    array[0, 10:20, 12:22] = 40.0
    write_nifti(Image(array, spacing=(1.0, 1.0, 1.0)), image)
    return Cli(("explain", run, image), (f"Cannot write {run / 'explain'}", NO_SPACE),
               absent=(".tmp-",), in_process=True, file_size_limit=4096)
