"""Corpus cases: cli."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from export.demo import PROFILES
from tests.corpus.bundle_cases import (
    _set_file,
)
from tests.corpus.data_cases import (
    _nifti,
)
from tests.corpus.harness import (
    CASES,
    CONFIG,
    Case,
    Cli,
    Work,
    case,
)

# --- CLI ------------------------------------------------------------------------------------------

CLI_CONFIG_CASES = [
    # (id, command, config content, extra args, needles): all fail in `load_config`.
    ("train-unknown-key", "train", {"model": {"filterz": 8}}, (), ("model.filterz", "'filters'", "Received")),
    ("train-patch-size-not-multiple-of-2**depth", "train", {"sampling": {"patch_size": [60, 64]}}, (),
     ("sampling.patch_size", "2**model.depth = 8", "Received: sampling.patch_size=[60, 64]")),
    ("train-hu-window-reversed", "train", {"model": {"hu_window": [400, -1000]}}, (),
     ("model.hu_window", "low < high", "Received: model.hu_window=[400, -1000]")),
    ("train-num-classes-3-with-two-names", "train", {"model": {"num_classes": 3}}, (),
     ("model.class_names", "must hold 3 names", "model.num_classes=3")),
    ("train-bad-split-fractions", "train", {"synthetic": {"split_fractions": [0.9, 0.3, -0.2]}}, (),
     ("synthetic.split_fractions", "summing to 1", "Received: synthetic.split_fractions=[0.9, 0.3, -0.2]")),
    ("train-empty-yaml", "train", "", (),
     ("must hold a mapping of config sections", "Received: an empty file")),
    ("train-non-utf8-config", "train", CONFIG.read_bytes() + "# café\n".encode("latin-1"), (),
     ("must be UTF-8 text", "Received: byte 0xe9")),
    ("generate-non-utf8-config", "generate", b"name: caf\xe9\n", (),
     ("must be UTF-8 text", "Received: byte 0xe9")),
    ("train-set-malformed-yaml", "train", {}, ("--set", "training.epochs=[1,"),
     ("override `training.epochs` must be valid YAML", "Received: 'training.epochs=[1,'")),
    ("train-set-without-equals", "train", {}, ("--set", "noequals"),
     ("`--set`", "section.key=value", "Received: 'noequals'")),
    ("train-set-pad-value-nan", "train", {}, ("--set", "preprocessing.pad_value=.nan"),
     ("preprocessing.pad_value", "finite", "Received: preprocessing.pad_value=nan")),
    ("generate-set-unknown-key", "generate", {}, ("--set", "synthetic.num_case=3"),
     ("Unknown config key `synthetic.num_case`", "'num_cases'", "Received: synthetic.num_case=3")),
]


def _cli_config_case(command, content, extra, needles, w: Work) -> Cli:
    path = w.config(content, rel="bad.yaml")
    return Cli((command, path, *extra, "--run-dir" if command == "train" else "--output", w.path / "out"),
               (f"kerasmed {command}: error:", *needles) + ((str(path),) if not extra else ()))


for _id, _command, _content, _extra, _needles in CLI_CONFIG_CASES:
    CASES.append(Case(f"cli/{_id}", lambda w, c=_command, t=_content, e=_extra, n=_needles:
                      _cli_config_case(c, t, e, n, w)))


@case("cli/train-zero-workers")
def _(w):
    return Cli(("train", CONFIG, "--workers", "0"),
               ("`--workers` must be at least 1", "Received: --workers 0"))


@case("cli/train-missing-data-folder")
def _(w):
    return Cli(("train", CONFIG, "--set", f"data.root={w.path / 'nowhere'}", "--run-dir", w.path / "run"),
               ("Data folder not found", f"Received: {w.path / 'nowhere'}"))


@case("cli/train-empty-mask-path-cell")
def _(w):
    # An empty cell used to become the data folder itself, opened as a DICOM series.
    data = w.data()
    manifest = pd.read_csv(data / "manifest.csv", dtype=str)
    manifest.loc[1, "mask_path"] = ""
    manifest.to_csv(data / "manifest.csv", index=False)
    return Cli(("train", CONFIG, "--set", f"data.root={data}", "--run-dir", w.path / "run"),
               ("`mask_path` must name a file in every row", "case 'case_001' (line 3)"))


@case("cli/train-into-a-finished-run")
def _(w):
    # It used to delete model.keras and rewrite config.yaml before the data was even read.
    data = w.data()
    run = w.run_folder(data=data)
    return Cli(("train", CONFIG, "--set", f"data.root={data}", "--run-dir", run),
               ("The run folder must not hold a finished run", "`kerasmed train --overwrite`",
                f"Received: {run} holding model.keras and train_summary.json"))


@case("cli/train-overwrite-finished-run-with-a-truncated-dicom")
def _(w):
    # --overwrite replaces a finished run only once the data has been read: a truncated slice
    # must fail first and leave the finished model as it was. (Fails while building the cache,
    # after TensorFlow is imported: in process.)
    data = w.data()
    run = w.run_folder(data=data)
    slice_ = sorted((data / "cases" / "case_000" / "dicom").iterdir())[4]
    slice_.write_bytes(slice_.read_bytes()[:200])
    sets = [a for o in PROFILES["tiny"] + [f"data.root={data}"] for a in ("--set", o)]
    return Cli(("train", CONFIG, *sets, "--run-dir", run, "--overwrite"),
               (f"`{slice_}`", "truncated or corrupt", "Received:"), outputs=("data/cache",),
               in_process=True)


@case("cli/train-into-a-users-folder")
def _(w):
    w.file("thesis/thesis.tex", "mine")
    return Cli(("train", CONFIG, "--set", f"data.root={w.data()}", "--run-dir", w.path / "thesis"),
               ("The run folder must be new, empty or a kerasmed run folder", "--overwrite",
                f"Received: {w.path / 'thesis'} holding 'thesis.tex'"))


@case("cli/train-run-dir-is-a-file")
def _(w):
    path = w.file("run.txt", "mine")
    return Cli(("train", CONFIG, "--set", f"data.root={w.data()}", "--run-dir", path, "--overwrite"),
               ("The run folder must be a folder", f"Received: {path} is a file"))


@case("cli/generate-into-a-users-folder")
def _(w):
    # The CLI used to advise the Python argument `overwrite=True`; it names its own flag first.
    w.file("data/labels.csv", "case,label\na,1\n")
    return Cli(("generate", CONFIG, "--output", w.path / "data"),
               ("Dataset folder `root` must be absent, empty or a finished dataset", "Pass --overwrite",
                f"Received: {w.path / 'data'} holding 'labels.csv'"))


@case("cli/generate-output-is-a-file")
def _(w):
    path = w.file("data", "mine")
    return Cli(("generate", CONFIG, "--output", path, "--overwrite"),
               ("Dataset folder `root` must be a folder", f"Received: {path} is a file"))


@case("cli/generate-sigterm")
def _(w):
    # SIGTERM used to kill generate at once, leaving its hidden temporary folder behind.
    def writing():
        return any(p.name.startswith(".data.tmp") for p in w.path.iterdir())

    return Cli(("generate", CONFIG, "--output", w.path / "data"),
               ("kerasmed generate: terminated (SIGTERM)",), code=143, terminate_when=writing)


@case("cli/evaluate-not-a-run")
def _(w):
    w.file("notes.txt", "mine")
    return Cli(("evaluate", w.path), ("Not a kerasmed run folder (no config.yaml)", f"Received: {w.path}"))


@case("cli/evaluate-non-utf8-run-config")
def _(w):
    run = w.run_folder(config=b"name: caf\xe9\n")
    return Cli(("evaluate", run),
               (f"Config file {run / 'config.yaml'} must be UTF-8 text", "Received: byte 0xe9"))


@case("cli/evaluate-truncated-model")
def _(w):
    run = w.run_folder(model=b"PK\x03\x04" + bytes(300))
    return Cli(("evaluate", run), (f"`{run / 'model.keras'}` must be a readable .keras archive",
                                   "Received: a 304-byte file that is not a zip archive"),
               absent=("File not found",))


@case("cli/evaluate-mask-of-another-shape")
def _(w):
    # `train` refused this (its cache checks every case); `evaluate` crashed in numpy instead.
    # It fails after the model is loaded, so after TensorFlow is imported: in process.
    image = np.full((4, 32, 32), -800.0, np.float32)
    _nifti(w, "data/c0.nii.gz", image)
    _nifti(w, "data/lungs.nii.gz", np.zeros((4, 32, 32), np.uint8))
    bad = _nifti(w, "data/bad.nii.gz", np.zeros((4, 32, 30), np.uint8))
    w.file("data/manifest.csv", "case_id,image_path,mask_path,lung_mask_path,split\n"
                                "c0,c0.nii.gz,bad.nii.gz,lungs.nii.gz,val\n")
    run = w.run_folder(data=w.path / "data")
    return Cli(("evaluate", run), ("Mask of case c0 must share the image geometry", "mask shape=(4, 32, 30)",
                                   str(bad)), in_process=True)


@case("cli/export-truncated-model")
def _(w):
    run = w.run_folder(model=b"PK\x03\x04" + bytes(300))
    return Cli(("export", run), (f"`{run / 'model.keras'}` must be a readable .keras archive",
                                 "truncated or corrupt"), absent=("File not found",))


@case("cli/export-non-utf8-run-config")
def _(w):
    run = w.run_folder(config=b"name: caf\xe9\n")
    return Cli(("export", run), (f"Config file {run / 'config.yaml'} must be UTF-8 text",))


@case("cli/export-not-a-run")
def _(w):
    return Cli(("export", w.path / "nowhere"),
               ("Not a kerasmed run folder", f"Received: {w.path / 'nowhere'}"))


@case("cli/export-output-is-a-file")
def _(w):
    run = w.run_folder()
    path = w.file("bundle.txt", "mine")
    return Cli(("export", run, "--output", path), ("`--output` (the bundle folder) must be a folder",
                                                   f"Received: {path} is a file"))


@case("cli/export-output-under-a-file")
def _(w):
    run = w.run_folder()
    path = w.file("notes.txt", "mine")
    # It used to fail inside the bundle writer's mkdir, with a traceback.
    return Cli(("export", run, "--output", path / "bundle"),
               ("`--output` (the bundle folder) must be a folder", f"but {path} on its path is a file",
                f"Received: {path / 'bundle'}"))


@case("cli/compare-output-is-a-file")
def _(w):
    report = w.file("report.md", "mine")
    return Cli(("compare", w.bundle(), "--output", report),
               ("`--output` (the report folder) must be a folder", f"Received: {report} is a file"))


@case("cli/compare-max-cases-0")
def _(w):
    return Cli(("compare", w.bundle(), "--max-cases", "0"),
               ("argument --max-cases: must be an integer >= 1", "Received: '0'"))


@case("cli/compare-max-cases-negative")
def _(w):
    return Cli(("compare", w.bundle(), "--max-cases", "-3"),
               ("argument --max-cases: must be an integer >= 1", "Received: '-3'"))


@case("cli/compare-max-cases-a-word")
def _(w):
    return Cli(("compare", w.bundle(), "--max-cases", "two"),
               ("argument --max-cases: must be an integer >= 1", "Received: 'two'"))


@case("cli/compare-narrower-keeps-the-certificate")
def _(w):
    # Not an error: a check of fewer artefacts and cases passes (exit 0), writes its own report,
    # and leaves the certificate in manifest.json as it was (it used to replace it).
    bundle = w.bundle()
    return Cli(("compare", bundle, "--data", w.data(), "--formats", "onnx", "--max-cases", "1"),
               ("narrower check (1 of 3 artefacts, 1 of 2 val cases)", "certificate was left unchanged",
                f"report: {bundle / 'parity_narrower'}"), outputs=("bundle/parity_narrower",), code=0)


@case("cli/compare-not-a-bundle")
def _(w):
    w.file("folder/notes.txt", "mine")
    return Cli(("compare", w.path / "folder"), ("A bundle must hold manifest.json", str(w.path / "folder")))


@case("cli/compare-tampered-artefact")
def _(w):
    bundle = w.bundle()
    with open(bundle / "model.tflite", "ab") as f:
        f.write(b"\0")
    return Cli(("compare", bundle), ("Artefact `tflite` (model.tflite) does not match its recorded sha256",
                                     "Received: sha256="))


@case("cli/compare-artefact-path-escapes")
def _(w):
    bundle = w.bundle()
    _set_file(bundle, "onnx", "../../../etc/passwd")
    return Cli(("compare", bundle), ("Artefact `onnx`", "must be a relative POSIX path inside the bundle",
                                     "Received: '../../../etc/passwd'"))


@case("cli/compare-manifest-null")
def _(w):
    bundle = w.bundle()
    (bundle / "manifest.json").write_text("null")
    return Cli(("compare", bundle), ("manifest.json must hold a JSON object. Received: None",))


def _users_workdir(w: Work) -> Path:
    workdir = w.path / "work"
    w.file("work/data/scans/IM0001.dcm", b"\0" * 300)
    w.file("work/data/labels.csv", "case,label\na,1\n")
    return workdir


@case("cli/demo-workdir-holding-users-data")
def _(w):
    # The demo used to delete WORKDIR/data (with the user's files) before checking anything.
    workdir = _users_workdir(w)
    return Cli(("demo", "--workdir", workdir, "--config", CONFIG, "--profile", "tiny"),
               ("The demo's data folder", "no .kerasmed marker", "Pass `kerasmed demo --overwrite`",
                f"Received: {workdir / 'data'} holding 'labels.csv', 'scans'"))


@case("cli/demo-bad-config-with-overwrite")
def _(w):
    # Even with --overwrite, the config is checked before anything is replaced.
    workdir = _users_workdir(w)
    return Cli(("demo", "--workdir", workdir, "--config", CONFIG, "--profile", "tiny", "--overwrite",
                "--set", "training.epochs=0"),
               ("training.epochs", "greater than 0", "Received: training.epochs=0"))


@case("cli/demo-workdir-is-a-file")
def _(w):
    path = w.file("notes.txt", "mine")
    return Cli(("demo", "--workdir", path, "--config", CONFIG, "--profile", "tiny"),
               ("`--workdir` must be a folder", f"Received: {path} is a file"))


@case("cli/demo-workdir-under-a-file")
def _(w):
    path = w.file("notes.txt", "mine")
    return Cli(("demo", "--workdir", path / "sub", "--config", CONFIG, "--overwrite"),
               ("`--workdir` must be a folder", f"{path} on its path is a file"))


@case("cli/demo-default-config-outside-the-repository")
def _(w):
    # `--config` defaulted to a path relative to the repository root; elsewhere it was not found.
    # A bad override shows the shipped config was read, and stops the demo before it writes.
    return Cli(("demo", "--workdir", w.path / "demo", "--set", "model.depth=0"),
               ("lung_nodule_seg_2d.yaml", "model.depth", "Received: model.depth=0"), absent=("not found",))


@case("cli/demo-unknown-profile")
def _(w):
    return Cli(("demo", "--workdir", w.path / "demo", "--profile", "huge"),
               ("argument --profile: invalid choice: 'huge'", "'tiny'"))


@case("cli/unknown-command")
def _(w):
    return Cli(("trian", CONFIG), ("argument COMMAND: invalid choice: 'trian'", "'train'"))
