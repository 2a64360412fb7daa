"""Corpus cases of issue 16 on training: a diverged (NaN) run, a classifier's data, run names.

Item 2: a learning rate that diverges stops training in one line and leaves no finished run; a
run whose `model.keras` holds NaN weights (saved by an earlier kerasmed) is refused by
`evaluate` and `export` before TensorFlow loads; a model that predicts NaN from finite weights is
reported as such, not scored "Dice 0.000"; a NaN in a cached image is refused naming the case.
Item 6: RGB PNG, colour-palette PNG and RGB DICOM in a classifier's data are check-data problems
that `--skip-bad` skips; a split with one class, a manifest without `val` rows, `model.backbone`
on a `cnn`, a `transfer` model on 8x8 images and `bench-train` on a classifier are one line;
temperature scaling stuck at its bound warns. Item 8: a run name is one plain folder name.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import yaml

from export.demo import PROFILES
from kerasmed.config import config_from_dict
from serving.errors import ConfigError, DataError
from tests.corpus.harness import (
    CASES,
    CONFIG,
    Api,
    Case,
    Cli,
    Work,
    case,
)


def _tiny_sets(data: Path, *extra: str) -> list[str]:
    return [a for o in [*PROFILES["tiny"], f"data.root={data}", *extra] for a in ("--set", o)]


def _model_bytes(w: Work, change) -> bytes:
    """The shared bundle's `model.keras` with `change(name, array)` applied to every weight of the
    model (not the optimizer's), edited with h5py: no TensorFlow needed."""
    import h5py

    src = Path(w._request.getfixturevalue("bundle_dir")) / "model.keras"
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights = io.BytesIO(members["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and not name.startswith("optimizer"):
                item[...] = change(name, item[()])

        f.visititems(visit)
    members["model.weights.h5"] = weights.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _nan_model(w: Work) -> bytes:
    return _model_bytes(w, lambda name, a: np.full_like(a, np.nan))


# --- item 2: a NaN model passes as a finished run ------------------------------------------------

@case("cli/train-learning-rate-1e12-diverges")
def _(w):
    # Trained to the end, printed "best val_dice 0.000" and saved 100% NaN weights. (It fails
    # in `fit`, after TensorFlow is imported: in process.) tests/kerasmed/training/
    # test_divergence.py checks the run left behind: not finished, and refused by export.
    data = w.data()
    return Cli(("train", CONFIG, *_tiny_sets(data, "training.learning_rate=1e12", "training.epochs=1"),
                "--run-dir", w.path / "run"),
               ("Training must keep a finite loss and finite weights", "the loss became nan at epoch 1",
                f"{w.path / 'run'} is not a finished run (no model.keras)",
                "Lower the learning rate (`training.learning_rate`, 1e+12 now)", "Received: loss=nan"),
               absent=("val_dice",), outputs=("data/cache", "run"), in_process=True)


@case("cli/evaluate-a-run-with-nan-weights")
def _(w):
    run = w.run_folder(model=_nan_model(w))
    return Cli(("evaluate", run),
               (f"`{run / 'model.keras'}` must hold finite weights", "training diverged",
                "lower `training.learning_rate`", "Received: NaN or inf in", "weight arrays"),
               absent=("Dice",))


@case("cli/export-a-run-with-nan-weights")
def _(w):
    run = w.run_folder(model=_nan_model(w))
    return Cli(("export", run),
               (f"`{run / 'model.keras'}` must hold finite weights", "Received: NaN or inf in"))


@case("cli/explain-a-run-with-nan-weights")
def _(w):
    run = w.run_folder(model=_nan_model(w))
    return Cli(("explain", run, w.path / "x.png"), (f"`{run / 'model.keras'}` must hold finite weights",))


@case("cli/evaluate-a-model-predicting-nan")
def _(w):
    # Finite weights, but one kernel so large that the first layer overflows to inf and the next
    # computes inf - inf: every prediction NaN, which thresholding turned into "Dice 0.000".
    # (Fails after the model runs: in process.)
    def huge(name, a):
        return np.full_like(a, 3e38) if name == "layers/conv2d/vars/0" else a

    data = w.data()
    run = w.run_folder(data=data, model=_model_bytes(w, huge))
    return Cli(("evaluate", run),
               ("The run's model must predict finite probabilities", "on case case_",
                "Received:", "predictions NaN or inf from", str(run / "model.keras")),
               absent=("Dice 0.000",), in_process=True)


@case("data/cached-image-with-nan")
def _(w):
    from kerasmed.data.cache import CachedCase
    from kerasmed.training.trainer import check_finite_cases

    image = np.zeros((4, 8, 8), np.float32)
    image[2, 3, 3:5] = np.nan
    path = w.path / "cache" / "cases" / "abc" / "image.npy"
    path.parent.mkdir(parents=True)
    np.save(path, image)
    cases = [CachedCase("good", "train", np.zeros((4, 8, 8), np.float32), None),
             CachedCase("c7", "val", np.load(path, mmap_mode="r"), None)]
    return Api(lambda: check_finite_cases(cases), DataError,
               ("Cached case c7 must hold finite intensities", "kerasmed preprocess CONFIG",
                f"Received: 2 of 256 voxels NaN or inf in {path}"))


# --- item 6: a classifier's data ------------------------------------------------------------------

CLASSIFIER = {
    "task": "classification", "name": "cls", "output_dir": "runs",
    "data": {"root": "data", "columns": {"mask": None, "label": "label"}},
    "preprocessing": {"target_spacing": [None, None, None], "size": [None, 32, 32], "pad_value": 0.0},
    "sampling": {"batch_size": 4},
    "model": {"name": "cnn", "context_slices": 1, "filters": 4, "depth": 2, "hu_window": [0.0, 255.0],
              "class_names": ["no_nodule", "nodule"]},
    "training": {"epochs": 1, "steps_per_epoch": 2},
    "classification": {"bootstrap": 20},
}


def _classifier(w: Work, labels: dict[str, list[str]], colour: dict[str, str] | None = None,
                **sections) -> Path:
    """A grey 32x32 PNG per case (`labels`: split -> labels, in order), a manifest and a config;
    `colour` makes case ids colour files: "rgb" PNG, "palette" PNG or "dicom" (RGB)."""
    from tests.serving.io.dicom_builders import _shipped

    rng = np.random.default_rng(0)
    rows, colour = ["case_id,image_path,label,split"], colour or {}
    for split, split_labels in labels.items():
        for label in split_labels:
            case_id = f"c{len(rows) - 1}"
            grey = rng.integers(60, 200, (32, 32), dtype=np.uint8)
            kind = colour.get(case_id)
            name = f"{case_id}.dcm" if kind == "dicom" else f"{case_id}.png"
            path = w.path / "data" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dicom":
                shutil.copy(_shipped("SC_rgb_small_odd.dcm"), path)
            elif kind == "rgb":
                PIL.Image.fromarray(np.stack([grey] * 3, -1)).save(path)
            elif kind == "palette":
                picture = PIL.Image.fromarray(grey % 3, mode="P")
                picture.putpalette([200, 30, 30, 30, 200, 30, 30, 30, 200])
                picture.save(path)
            else:
                PIL.Image.fromarray(grey).save(path)
            rows.append(f"{case_id},{name},{label},{split}")
    w.file("data/manifest.csv", "\n".join(rows) + "\n")
    raw = yaml.safe_load(yaml.safe_dump(CLASSIFIER))
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return w.file("cls.yaml", yaml.safe_dump(raw, sort_keys=False))


BALANCED = {"train": ["no_nodule", "nodule"] * 3, "val": ["no_nodule", "nodule"] * 2}


def _first_problem(config_path: Path):
    """What `kerasmed check-data` prints first (`<case>: <file>: <reason>`), raised as the one
    line: check-data itself exits 1 with its report, which is no one-line error."""
    from kerasmed.config import load_config
    from kerasmed.data.check import check_dataset

    report = check_dataset(load_config(config_path), progress=False)
    if report.lines():
        raise DataError(report.lines()[0])


def _check_data_case(w: Work, kind: str) -> Api:
    config = _classifier(w, BALANCED, {"c2": kind})
    file = f"data/{'c2.dcm' if kind == 'dicom' else 'c2.png'}"
    return Api(lambda: _first_problem(config), DataError,
               (f"c2: {file}: Image of case c2 (`{file}`) requires a grey image",
                "Received: an RGB image (3 channels)"))


for _kind in ("rgb", "palette", "dicom"):  # an RGB PNG, a colour-palette PNG, an RGB DICOM
    CASES.append(Case(f"data/check-data-classifier-{_kind}-image", lambda w, k=_kind: _check_data_case(w, k)))


@case("cli/train-skip-bad-skips-a-classifiers-colour-images")
def _(w):
    # The colour images used to pass the check and stop training in the cache; now they are
    # skipped, which leaves the `val` split empty here: one line saying so. (With --skip-bad the
    # check runs inside `train`, after TensorFlow is imported: in process.)
    config = _classifier(w, BALANCED, {"c6": "rgb", "c7": "palette", "c8": "dicom", "c9": "rgb"})
    return Cli(("train", config, "--skip-bad", "--run-dir", w.path / "run"),
               ("`--skip-bad` left too few: 4 of 10 cases have problems",
                "(see data/check/problems.csv)",
                "Received: good cases per split {'train': 6}"),
               outputs=("data/check",), in_process=True)


@case("cli/train-classifier-val-split-of-one-class")
def _(w):
    config = _classifier(w, {"train": BALANCED["train"], "val": ["nodule"] * 4})
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("A classifier's `val` split must hold cases of both classes", "validation AUC",
                "Received: 4 `val` cases: no_nodule 0, nodule 4"), absent=("val_auc 0.000",))


@case("cli/train-classifier-train-split-of-one-class")
def _(w):
    config = _classifier(w, {"train": ["no_nodule"] * 5, "val": BALANCED["val"]})
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("A classifier's `train` split must hold cases of both classes",
                "Received: 5 `train` cases: no_nodule 5, nodule 0"))


@case("cli/train-classifier-manifest-without-val-rows")
def _(w):
    config = _classifier(w, {"train": BALANCED["train"], "test": ["nodule", "no_nodule"]})
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("Training needs `train` and `val` cases",
                "Received: cases per split {'train': 6, 'test': 2}"))


@case("cli/train-backbone-on-a-cnn")
def _(w):
    config = _classifier(w, BALANCED, model={"backbone": "ResNet50V2"})
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("config key `model.backbone` is for a model on a keras.applications backbone",
                "model.name='cnn'", "Received: model.name='cnn', model.backbone='ResNet50V2'"))


@case("cli/train-transfer-on-8x8-images")
def _(w):
    config = _classifier(w, BALANCED, model={"name": "transfer", "backbone": "MobileNetV3Small"},
                         preprocessing={"size": [None, 8, 8]})
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("config key `preprocessing.size` must be at least 32 in y and x for model.name='transfer'",
                "Received: preprocessing.size=[None, 8, 8]"))


@case("config/transfer-builder-on-8x8-input")
def _(w):
    from kerasmed.models.transfer import transfer

    return Api(lambda: transfer(input_shape=(8, 8, 1), backbone="MobileNetV3Small"), ConfigError,
               ("`input_shape` must be at least 32 in H and W", "Received: input_shape=(8, 8, 1)"))


@case("cli/bench-train-on-a-classifier")
def _(w):
    config = _classifier(w, BALANCED)
    return Cli(("bench-train", config, "--output", w.path / "bench", "--no-peer"),
               ("`kerasmed bench-train` measures a segmentation model's training",
                "Received: task='classification'"))


@case("cli/evaluate-temperature-scaling-at-its-bound")
def _(w):
    # A classifier whose every logit is the same: the fit pushes T to its upper bound (20), and
    # the calibrated probabilities all sit on 0.5. No error, but a warning line. (In process.)
    from kerasmed.config import load_config
    from kerasmed.training.trainer import build_compiled_model

    config = _classifier(w, BALANCED)
    model = build_compiled_model(load_config(config))
    kernel, _ = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([np.zeros_like(kernel), np.full((1,), 2.0, np.float32)])
    run = w.path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.yaml").write_text(config.read_text().replace("root: data", f"root: {w.path / 'data'}"))
    return Cli(("evaluate", run),
               ("model AUC (val, 4 cases)", "warning: temperature scaling stopped at its bound T = 20",
                "carry almost no information about the labels", "classification.temperature_scaling: false"),
               code=0, outputs=("run/eval", "data/cache"), in_process=True)


# --- item 8: run names are paths ------------------------------------------------------------------

RUN_NAMES = [("dotdot-path", "../../x"), ("subfolder", "a/b"), ("absolute", "/tmp/x"), ("dot", "."),
             ("dotdot", ".."), ("backslash", "a\\b"), ("empty", ""), ("blank", "  ")]

for _id, _name in RUN_NAMES:
    CASES.append(Case(f"config/run-name-{_id}", lambda w, n=_name: Api(
        lambda: config_from_dict({"name": n}), ConfigError,
        ("config key `name`: must be one plain folder name", "not empty, `.` or `..`",
         "without `/`, `\\`", f"Received: name={n!r}"))))


@case("cli/train-run-name-outside-output-dir")
def _(w):
    # It gave a Keras traceback; had the model name allowed it, the run would have landed in
    # <output_dir>/../../x, outside `output_dir`.
    return Cli(("train", CONFIG, "--set", "name=../../x", "--set", f"output_dir={w.path / 'runs'}"),
               ("config key `name`: must be one plain folder name", "Received: name='../../x'"))
