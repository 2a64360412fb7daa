"""Issue 6's bad-input corpus: every bad input gets one clear line, and nothing else changes.

One parametrised table of cases across config, data, bundle, runner and CLI, each run the same
way in its own work folder (the current folder during the case), with the same four checks:

1. the documented error type (API) or exit code 2 (CLI; 143 after SIGTERM, and 0 for a narrower
   `compare`, which is no error but must leave the bundle's recorded certificate alone);
2. exactly one line (the error's text, or stderr) that names the file or key, what was expected
   and what was received (the case's needles);
3. no traceback;
4. nothing under the work folder (nor the shared fixtures a case reads) created, changed or
   deleted, except the command's own declared output.

API cases run in this process. CLI cases run the installed `kerasmed` console script in the work
folder, and are chosen to fail before the CLI imports TensorFlow (half a second each; the
narrower `compare`, which must run, takes three). The two that can only fail after TensorFlow
loads (the data or model is read first) call `kerasmed.cli.main` in this process instead, with
the process's stderr captured, rather than start TensorFlow in a new process for each.
`ISSUE_6` maps every bad input the issue lists to its case.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from export.demo import PROFILES
from kerasmed.config import config_from_dict, load_config
from serving.errors import BundleError, ConfigError, DataError
from serving.image import Image
from tests.helpers import (
    BAD_INPUTS,
    bad_input,
    changes_outside,
    copy_bundle,
    kerasmed_process,
    synthetic_ct,
    tiny_preprocess_spec,
    tree_snapshot,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lung_nodule_seg_2d.yaml"
KERASMED = Path(sys.executable).parent / "kerasmed"


# --- what a case expects -------------------------------------------------------------------------

@dataclass
class Api:
    """Call `call()`; it must raise `error` whose text is one line holding every needle."""

    call: Callable[[], Any]
    error: type[BaseException]
    needles: tuple = ()  # substrings, or compiled regexes searched for
    absent: tuple = ()  # substrings the message must not hold (e.g. a misleading old wording)
    outputs: tuple = ()  # paths relative to the work folder the call may change


@dataclass
class Cli:
    """Run `kerasmed -q ARGS` in the work folder; one stderr line holding every needle."""

    args: tuple
    needles: tuple = ()
    absent: tuple = ()
    outputs: tuple = ()
    code: int = 2
    in_process: bool = False  # only for commands that fail after TensorFlow is imported
    terminate_when: Callable[[], bool] | None = None  # send SIGTERM once this is true


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Work], Api | Cli]


CASES: list[Case] = []


def case(case_id: str):
    """Register `build(work) -> Api | Cli` as the case `case_id`."""

    def register(build):
        CASES.append(Case(case_id, build))
        return build

    return register


# --- the work folder and shared fixtures ---------------------------------------------------------

_RUNNERS: dict[str, Any] = {}


class Work:
    """A case's work folder, with writable copies of the shared fixtures it asks for."""

    def __init__(self, path: Path, request):
        self.path = path
        self._request = request
        self.watched: list[Path] = []  # shared, read-only fixtures the case reads

    def file(self, rel: str, content: str | bytes = b"") -> Path:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def config(self, content: dict | str | bytes | None = None, rel: str = "config.yaml") -> Path:
        """A config file: the shipped one with `content`'s sections merged in, or raw text."""
        if isinstance(content, (str, bytes)):
            return self.file(rel, content)
        raw = yaml.safe_load(CONFIG.read_text())
        for section, values in (content or {}).items():
            if isinstance(values, dict) and isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
        return self.file(rel, yaml.safe_dump(raw, sort_keys=False))

    def bundle(self, rel: str = "bundle") -> Path:
        """A writable copy of the shared tiny bundle (keras, saved_model, tflite, onnx)."""
        return copy_bundle(self._request.getfixturevalue("bundle_dir"), self.path / rel)

    def data(self, rel: str = "data") -> Path:
        """A writable copy of the shared tiny synthetic dataset (4 DICOM cases, 12x96x96)."""
        src = self._request.getfixturevalue("corpus_data")
        return Path(shutil.copytree(src, self.path / rel, symlinks=True))

    def keras_model(self):
        """The shared bundle's Keras model (loaded once per session)."""
        return self._request.getfixturevalue("keras_model")

    def runner(self, fmt: str):
        """A runner of the shared bundle's artefact (built once per session; watched)."""
        from serving.runners.registry import make_runner

        bundle = self._request.getfixturevalue("bundle_dir")
        self.watched.append(Path(bundle))
        if fmt not in _RUNNERS:
            options = {"onnx": {"intra_op_num_threads": 1}, "tflite": {"num_threads": 1}}
            file = {"onnx": "model.onnx", "tflite": "model.tflite", "saved_model": "saved_model"}
            _RUNNERS[fmt] = make_runner(fmt, Path(bundle) / file[fmt], **options.get(fmt, {}))
        return _RUNNERS[fmt]

    def run_folder(self, rel: str = "run", data: Path | None = None, model: bytes | None = None,
                   config: bytes | None = None) -> Path:
        """A run folder as `train` leaves it: marker, config.yaml, model.keras, summary."""
        from serving.ownership import RUN, write_marker

        run = self.path / rel
        run.mkdir(parents=True)
        write_marker(run, RUN, "kerasmed train")
        if config is None:
            sections = {"data": {"root": str(data)}} if data else {}
            config = self.config(sections, rel=f"{rel}/config.yaml").read_bytes()
        (run / "config.yaml").write_bytes(config)
        if model is None:
            model = (Path(self._request.getfixturevalue("bundle_dir")) / "model.keras").read_bytes()
        (run / "model.keras").write_bytes(model)
        (run / "train_summary.json").write_text('{"epochs_run": 2}\n')
        return run


@pytest.fixture(scope="session")
def corpus_data(tmp_path_factory):
    """The tiny profile's synthetic dataset (4 cases of 12 x 96 x 96). Copy it (`Work.data`)."""
    from kerasmed.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("corpus") / "data"
    s = load_config(CONFIG, PROFILES["tiny"]).synthetic
    generate_dataset(root, num_cases=s.num_cases, seed=s.seed, shape=s.shape,
                     split_fractions=s.split_fractions, progress=False)
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- config ---------------------------------------------------------------------------------------
# (id, content of the config file, --set overrides, needles). A dict merges sections into the
# shipped config; str/bytes are the file itself. "<path>" in a needle stands for the file.

CONFIG_CASES = [
    ("unknown-key", {"model": {"filterz": 8}}, (),
     ("<path>", "Unknown config key `model.filterz`", "'filters'", "Received: model.filterz=8")),
    ("unknown-section", {"modle": {"depth": 3}}, (),
     ("<path>", "Unknown config key `modle`", "'model'", "Received: modle=")),
    ("section-not-a-mapping", {"model": 5}, (),
     ("<path>", "config key `model` must be a mapping of keys (a section)", "Received: model=5")),
    ("negative-patch-size", {"sampling": {"patch_size": [-96, 96]}}, (),
     ("<path>", "`sampling.patch_size.0`", "greater than 0", "Received: sampling.patch_size.0=-96")),
    ("patch-size-not-multiple-of-2**depth", {"sampling": {"patch_size": [60, 64]}}, (),
     ("<path>", "`sampling.patch_size` must hold multiples of 2**model.depth = 8",
      "Received: sampling.patch_size=[60, 64], model.depth=3")),
    ("patch-size-too-small-for-depth-5", {"sampling": {"patch_size": [48, 48]}, "model": {"depth": 5}},
     (), ("<path>", "2**model.depth = 32", "Received: sampling.patch_size=[48, 48], model.depth=5")),
    ("slice-size-not-multiple-of-2**depth", {"preprocessing": {"size": [None, 250, 256]}}, (),
     ("<path>", "`preprocessing.size` must hold null or multiples of 2**model.depth = 8",
      "Received: preprocessing.size=[None, 250, 256]")),
    ("hu-window-reversed", {"model": {"hu_window": [400, -1000]}}, (),
     ("<path>", "`model.hu_window`", "low < high", "Received: model.hu_window=[400, -1000]")),
    ("hu-window-zero-width", {"model": {"hu_window": [0, 0]}}, (),
     ("<path>", "`model.hu_window`", "low < high", "Received: model.hu_window=[0, 0]")),
    ("hu-window-three-values", {"model": {"hu_window": [-1000, 0, 400]}}, (),
     ("<path>", "`model.hu_window`", "[low, high]", "Received: model.hu_window=[-1000, 0, 400]")),
    ("hu-window-nan", {"model": {"hu_window": [math.nan, 400]}}, (),
     ("<path>", "`model.hu_window.0`", "finite", "Received: model.hu_window.0=nan")),
    ("pad-value-nan", {"preprocessing": {"pad_value": math.nan}}, (),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=nan")),
    ("pad-value-inf", {"preprocessing": {"pad_value": -math.inf}}, (),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=-inf")),
    ("pad-value-string", {"preprocessing": {"pad_value": "air"}}, (),
     ("<path>", "`preprocessing.pad_value`", "number", "Received: preprocessing.pad_value='air'")),
    ("learning-rate-inf", {"training": {"learning_rate": math.inf}}, (),
     ("<path>", "`training.learning_rate`", "finite", "Received: training.learning_rate=inf")),
    ("learning-rate-zero", {"training": {"learning_rate": 0}}, (),
     ("<path>", "`training.learning_rate`", "greater than 0", "Received: training.learning_rate=0")),
    ("target-spacing-zero", {"preprocessing": {"target_spacing": [None, 0, 1.25]}}, (),
     ("<path>", "`preprocessing.target_spacing`", "positive", "Received: preprocessing.target_spacing=")),
    ("target-spacing-minus-inf", {"preprocessing": {"target_spacing": [None, -math.inf, 1.25]}}, (),
     ("<path>", "`preprocessing.target_spacing.1`", "finite", "=-inf")),
    ("threshold-nan", {"evaluation": {"threshold": math.nan}}, (),
     ("<path>", "`evaluation.threshold`", "finite", "Received: evaluation.threshold=nan")),
    ("threshold-one", {"evaluation": {"threshold": 1.0}}, (),
     ("<path>", "`evaluation.threshold`", "less than 1", "Received: evaluation.threshold=1.0")),
    ("num-classes-3-with-two-class-names", {"model": {"num_classes": 3}}, (),
     ("<path>", "`model.class_names` must hold 3 names for model.num_classes=3",
      "Received: model.class_names=['background', 'nodule'], model.num_classes=3")),
    ("three-class-names-for-one-class", {"model": {"class_names": ["a", "b", "c"]}}, (),
     ("<path>", "`model.class_names` must hold 1 or 2 names", "Received: model.class_names=['a', 'b', 'c']")),
    ("split-fractions-negative", {"synthetic": {"split_fractions": [0.9, 0.3, -0.2]}}, (),
     ("<path>", "`synthetic.split_fractions`", "non-negative", "summing to 1",
      "Received: synthetic.split_fractions=[0.9, 0.3, -0.2]")),
    ("split-fractions-sum-below-1", {"synthetic": {"split_fractions": [0.5, 0.2, 0.1]}}, (),
     ("<path>", "`synthetic.split_fractions`", "summing to 1", "=[0.5, 0.2, 0.1]")),
    ("split-fractions-no-train", {"synthetic": {"split_fractions": [0.0, 0.5, 0.5]}}, (),
     ("<path>", "`synthetic.split_fractions`", "train > 0", "=[0.0, 0.5, 0.5]")),
    ("split-fractions-two-values", {"synthetic": {"split_fractions": [0.5, 0.5]}}, (),
     ("<path>", "`synthetic.split_fractions`", "Received: synthetic.split_fractions")),
    ("num-cases-zero", {"synthetic": {"num_cases": 0}}, (),
     ("<path>", "`synthetic.num_cases`", "greater than 0", "Received: synthetic.num_cases=0")),
    ("mixed-precision-unknown", {"training": {"mixed_precision": "fp8"}}, (),
     ("<path>", "`training.mixed_precision`", "'mixed_bfloat16'",
      "Received: training.mixed_precision='fp8'")),
    ("normalization-unknown", {"model": {"normalization": "layer"}}, (),
     ("<path>", "`model.normalization`", "'group'", "Received: model.normalization='layer'")),
    ("context-slices-even", {"model": {"context_slices": 4}}, (),
     ("<path>", "`model.context_slices`", "odd", "Received: model.context_slices=4")),
    ("depth-zero", {"model": {"depth": 0}}, (),
     ("<path>", "`model.depth`", "greater than 0", "Received: model.depth=0")),
    ("epochs-a-word", {"training": {"epochs": "ten"}}, (),
     ("<path>", "`training.epochs`", "integer", "Received: training.epochs='ten'")),
    ("deterministic-sometimes", {"training": {"deterministic": "sometimes"}}, (),
     ("<path>", "`training.deterministic`", "boolean", "Received: training.deterministic='sometimes'")),
    ("intensity-scale-one", {"augmentation": {"intensity_scale": 1.0}}, (),
     ("<path>", "`augmentation.intensity_scale`", "less than 1", "=1.0")),
    ("max-minutes-zero", {"training": {"max_minutes": 0}}, (),
     ("<path>", "`training.max_minutes`", "greater than 0", "Received: training.max_minutes=0")),
    ("shape-two-values", {"synthetic": {"shape": [48, 256]}}, (),
     ("<path>", "`synthetic.shape`", "Received: synthetic.shape")),
    ("empty-file", "", (), ("Config file <path> must hold a mapping", "Received: an empty file")),
    ("comments-only", "# nothing yet\n", (), ("Config file <path> must hold a mapping", "an empty file")),
    ("non-utf8", CONFIG.read_bytes() + "# café\n".encode("latin-1"), (),
     ("Config file <path> must be UTF-8 text", "Received: byte 0xe9 at offset")),
    ("not-yaml", "model: [1, 2\n", (), ("Config file <path> is not valid YAML", "Received:")),
    ("top-level-list", "- model\n- training\n", (),
     ("Config file <path> must hold a mapping", "Received: list")),
    ("top-level-scalar", "5\n", (), ("Config file <path> must hold a mapping", "Received: int")),
    ("set-malformed-yaml", None, ("training.epochs=[1,",),
     ("The value of override `training.epochs` must be valid YAML", "Received: 'training.epochs=[1,'")),
    ("set-unclosed-brace", None, ("model.name={",),
     ("override `model.name` must be valid YAML", "Received: 'model.name={'")),
    ("set-without-equals", None, ("noequals",),
     ("Overrides (`--set`) must look like `section.key=value`", "Received: 'noequals'")),
    ("set-empty-key-part", None, ("training..epochs=3",),
     ("must look like `section.key=value`", "Received: 'training..epochs=3'")),
    ("set-empty-key", None, ("=3",), ("must look like `section.key=value`", "Received: '=3'")),
    ("set-through-a-value", None, ("training.epochs.max=3",),
     ("Override `training.epochs.max` goes through a non-section key", "Received: 'training.epochs.max=3'")),
    ("set-unknown-key", None, ("model.filterz=3",),
     ("<path>", "Unknown config key `model.filterz`", "Received: model.filterz=3")),
    ("set-pad-value-nan", None, ("preprocessing.pad_value=.nan",),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=nan")),
]


def _config_case(content, overrides, needles, w: Work) -> Api:
    path = w.config(content)
    needles = tuple(n.replace("<path>", str(path)) for n in needles)
    return Api(lambda: load_config(path, list(overrides)), ConfigError, needles)


for _id, _content, _overrides, _needles in CONFIG_CASES:
    CASES.append(Case(f"config/{_id}",
                      lambda w, c=_content, o=_overrides, n=_needles: _config_case(c, o, n, w)))


@case("config/missing-file")
def _(w):
    path = w.path / "nope.yaml"
    return Api(lambda: load_config(path), ConfigError, ("Config file not found", f"Received: {path}"))


@case("config/a-folder-as-file")
def _(w):
    path = w.path / "configs"
    path.mkdir()
    return Api(lambda: load_config(path), ConfigError,
               (f"Config file {path} must be a YAML file. Received: a folder",), absent=("not found",))


@case("config/dict-not-a-mapping")
def _(w):
    return Api(lambda: config_from_dict(["model"]), ConfigError,
               ("config must be a YAML mapping of sections", "Received: list"))


@case("config/run-config-non-utf8")
def _(w):
    from kerasmed.run import load_run

    run = w.run_folder(config=b"name: caf\xe9\n")
    return Api(lambda: load_run(run), ConfigError,
               (f"Config file {run / 'config.yaml'} must be UTF-8 text", "Received: byte 0xe9"))


@case("config/demo-profile-unknown")
def _(w):
    from export.demo import prepare_demo

    return Api(lambda: prepare_demo(w.path / "demo", CONFIG, "huge"), ConfigError,
               ("`profile` must be one of ['fast', 'full', 'tiny']", "Received: 'huge'"))


@case("config/preprocess-spec-pad-value-nan")
def _(w):
    from serving.preprocessing import PreprocessSpec

    return Api(lambda: PreprocessSpec((None, 1.0, 1.0), (None, 32, 32), math.nan), ConfigError,
               ("`pad_value` must be a finite number", "Received: pad_value=nan"))


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
    ("missing-column", "case_id,image_path,mask_path\nc0,a.npy,m.npy\n",
     ("Manifest <path> must have columns", "'split'",
      "Received: columns=['case_id', 'image_path', 'mask_path']")),
    ("no-rows", HEADER, ("Manifest <path> lists no cases", "Received: 0 rows")),
    ("unknown-split", HEADER + "c0,a.npy,m.npy,training\n",
     ("Manifest <path>: `split` must be one of ('train', 'val', 'test')", "Received: ['training']")),
    ("duplicate-case-id", HEADER + "c0,a.npy,m.npy,train\nc0,a.npy,m.npy,val\n",
     ("Manifest <path>: case ids must be unique", "duplicates: ['c0']")),
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
    return Api(_read(path), DataError, (f"`{path}` must be a complete PNG, JPEG or TIFF image",
                                        "Received:"))


@case("data/image-format-unknown")
def _(w):
    path = w.file("x.npy", _npy_bytes(np.zeros((4, 8, 8), np.float32)))
    return Api(_read(path, format="mha"), ConfigError,
               ("Unknown image format; valid formats: [", "'npy', 'npz', 'png', 'tiff']",
                "Received: format='mha'"))


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


# --- bundle ---------------------------------------------------------------------------------------

def _edit(path: list, value=None, delete: bool = False):
    """A manifest edit: set (or delete) the entry at `path` (keys and indices)."""

    def edit(manifest):
        node = manifest
        for part in path[:-1]:
            node = node[part]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return manifest

    return edit


def _artefact_index(manifest: dict, key: str) -> int:
    return next(i for i, a in enumerate(manifest["artefacts"]) if a["key"] == key)


# (id, edit of the parsed manifest, needles). Artefacts: 0 keras, 1 saved_model, 2 tflite, 3 onnx.
MANIFEST_EDITS = [
    ("manifest-null", lambda m: None, ("manifest.json must hold a JSON object. Received: None",)),
    ("manifest-5", lambda m: 5, ("manifest.json must hold a JSON object. Received: 5",)),
    ("manifest-list", lambda m: [m], ("manifest.json must hold a JSON object. Received: [",)),
    ("manifest-string", lambda m: "bundle", ("manifest.json must hold a JSON object. Received: 'bundle'",)),
    ("task-missing", _edit(["task"], delete=True),
     ("`task` in manifest.json must be a non-empty string. Received: None",)),
    ("task-empty", _edit(["task"], ""),
     ("`task` in manifest.json must be a non-empty string. Received: ''",)),
    ("input-not-an-object", _edit(["input"], "HU"),
     ("`input` in manifest.json must be an object. Received: 'HU'",)),
    ("artefacts-missing", _edit(["artefacts"], delete=True),
     ("`artefacts` in manifest.json must be a non-empty list of objects. Received: None",)),
    ("artefacts-empty", _edit(["artefacts"], []), ("`artefacts` in manifest.json must be a non-empty list",)),
    ("artefacts-an-object", _edit(["artefacts"], {"onnx": "model.onnx"}),
     ("`artefacts` in manifest.json must be a non-empty list", "Received: {'onnx': 'model.onnx'}")),
    ("artefact-a-string", _edit(["artefacts", 1], "saved_model"),
     ("`artefacts[1]` in manifest.json must be an object. Received: 'saved_model'",)),
    ("artefact-file-5", _edit(["artefacts", 1, "file"], 5),
     ("`artefacts[1].file` in manifest.json must be a string. Received: 5",)),
    ("artefact-file-missing", _edit(["artefacts", 2, "file"], delete=True),
     ("`artefacts[2].file` in manifest.json must be a string. Received: None",)),
    ("artefact-format-missing", _edit(["artefacts", 3, "format"], delete=True),
     ("`artefacts[3].format` in manifest.json must be a non-empty string. Received: None",)),
    ("artefact-sha256-not-hex", _edit(["artefacts", 0, "sha256"], "z" * 64),
     ("`artefacts[0].sha256` in manifest.json must be 64 lowercase hex digits. Received: 'zzz",)),
    ("artefact-sha256-short", _edit(["artefacts", 0, "sha256"], "abc"),
     ("`artefacts[0].sha256` in manifest.json must be 64 lowercase hex digits. Received: 'abc'",)),
    ("artefact-key-repeated", _edit(["artefacts", 3, "key"], "keras"),
     ("`artefacts[3].key` in manifest.json must be unique across artefacts", "Received: 'keras'")),
    ("artefact-precision-a-number", _edit(["artefacts", 2, "precision"], 32),
     ("`artefacts[2].precision` in manifest.json must be a non-empty string. Received: 32",)),
    ("file-empty", _edit(["artefacts", 3, "file"], ""),
     ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path inside the bundle folder",
      "Received: ''")),
    ("file-nul-byte", _edit(["artefacts", 3, "file"], "model.onnx\0.txt"),
     ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path", "no NUL byte")),
    ("file-dotdot-etc-passwd", _edit(["artefacts", 3, "file"], "../../../etc/passwd"),
     ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path", "no `..`",
      "Received: '../../../etc/passwd'")),
    ("file-windows-drive", _edit(["artefacts", 3, "file"], "C:\\models\\model.onnx"),
     ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path", "not absolute")),
    ("file-backslash-dotdot", _edit(["artefacts", 3, "file"], "..\\outside\\model.onnx"),
     ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path", "no `..`")),
    ("file-lone-surrogate", _edit(["artefacts", 3, "file"], "model\ud800.onnx"),
     ("Artefact `onnx` (`artefacts[3].file`) must be a file name the file system can encode", "Received:")),
    ("class-names-numbers", _edit(["class_names"], [0, 1]),
     ("`class_names` in manifest.json must be a list of strings. Received: [0, 1]",)),
    ("threshold-nan", _edit(["postprocessing", "threshold"], math.nan),
     ("`postprocessing.threshold` in manifest.json must be a number in [0, 1]. Received: nan",)),
    ("threshold-above-1", _edit(["postprocessing", "threshold"], 1.5),
     ("`postprocessing.threshold` in manifest.json must be a number in [0, 1]. Received: 1.5",)),
    ("threshold-a-string", _edit(["postprocessing", "threshold"], "0.5"),
     ("`postprocessing.threshold` in manifest.json must be a number in [0, 1]. Received: '0.5'",)),
    ("postprocessing-a-list", _edit(["postprocessing"], [0.5]),
     ("`postprocessing` in manifest.json must be an object. Received: [0.5]",)),
    ("parity-a-string", _edit(["parity"], "pass"),
     ("`parity` in manifest.json must be an object. Received: 'pass'",)),
]


def _manifest_edit_case(edit, needles, w: Work) -> Api:
    from serving.bundle import load_bundle

    bundle = w.bundle()
    path = bundle / "manifest.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return Api(lambda: load_bundle(bundle), BundleError, needles)


for _id, _edit_fn, _needles in MANIFEST_EDITS:
    CASES.append(Case(f"bundle/{_id}", lambda w, e=_edit_fn, n=_needles: _manifest_edit_case(e, n, w)))


def _load(bundle: Path, **kwargs) -> Callable[[], Any]:
    from serving.bundle import load_bundle

    return lambda: load_bundle(bundle, **kwargs)


def _set_file(bundle: Path, key: str, file: str, sha256: str | None = None) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["artefacts"][_artefact_index(manifest, key)]
    entry["file"] = file
    if sha256:
        entry["sha256"] = sha256
    path.write_text(json.dumps(manifest))


@case("bundle/file-absolute-etc-passwd")
def _(w):
    # With a matching sha256, only the containment rule stands between onnxruntime and the file.
    bundle = w.bundle()
    _set_file(bundle, "onnx", "/etc/passwd", _sha256(Path("/etc/passwd")))
    return Api(_load(bundle), BundleError,
               ("Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path", "not absolute",
                "Received: '/etc/passwd'"))


@case("bundle/file-dotdot-with-matching-sha256")
def _(w):
    bundle = w.bundle()
    target = w.path / "outside" / "model.onnx"
    target.parent.mkdir()
    shutil.move(bundle / "model.onnx", target)
    _set_file(bundle, "onnx", "../outside/model.onnx")
    return Api(_load(bundle), BundleError,
               ("Artefact `onnx`", "no `..`", "Received: '../outside/model.onnx'"))


@case("bundle/symlink-to-a-file-outside")
def _(w):
    bundle = w.bundle()
    target = w.path / "outside.onnx"
    shutil.move(bundle / "model.onnx", target)
    (bundle / "model.onnx").symlink_to(target)
    return Api(_load(bundle), BundleError,
               ("Artefact `onnx` (model.onnx) must resolve inside the bundle folder", f"-> {str(target)!r}"))


@case("bundle/symlink-to-a-folder-outside")
def _(w):
    bundle = w.bundle()
    target = w.path / "outside_saved_model"
    shutil.move(bundle / "saved_model", target)
    (bundle / "saved_model").symlink_to(target, target_is_directory=True)
    return Api(_load(bundle), BundleError,
               ("Artefact `saved_model` (saved_model) must resolve inside the bundle folder", "Received:"))


@case("bundle/symlink-inside-saved-model-to-outside")
def _(w):
    bundle = w.bundle()
    name = "saved_model/variables/variables.data-00000-of-00001"
    target = w.path / "outside.data"
    shutil.move(bundle / name, target)
    (bundle / name).symlink_to(target)
    return Api(_load(bundle), BundleError,
               (f"Artefact `saved_model` ({name}) must resolve inside", "Received:"))


@case("bundle/manifest-symlink-to-outside")
def _(w):
    bundle = w.bundle()
    target = w.path / "outside.json"
    shutil.move(bundle / "manifest.json", target)
    (bundle / "manifest.json").symlink_to(target)
    return Api(_load(bundle), BundleError,
               ("manifest.json must resolve inside the bundle folder", "Received:"))


@case("bundle/manifest-missing")
def _(w):
    bundle = w.bundle()
    (bundle / "manifest.json").unlink()
    return Api(_load(bundle), BundleError,
               ("A bundle must hold manifest.json", f"Received: path={str(bundle)!r}"))


@case("bundle/manifest-truncated-json")
def _(w):
    bundle = w.bundle()
    path = bundle / "manifest.json"
    path.write_bytes(path.read_bytes()[:100])
    return Api(_load(bundle), BundleError,
               ("manifest.json must be readable JSON", f"Received: {str(path)!r}"))


@case("bundle/manifest-non-utf8")
def _(w):
    bundle = w.bundle()
    path = bundle / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"tiny-unet"', b'"tiny-\xe9"'))
    return Api(_load(bundle), BundleError, ("manifest.json must be readable JSON", "Received:"))


@case("bundle/artefact-file-deleted")
def _(w):
    bundle = w.bundle()
    (bundle / "model.tflite").unlink()
    return Api(_load(bundle), BundleError,
               ("Artefact `tflite` (model.tflite) is listed in manifest.json but its file is missing",
                "Received:"))


@case("bundle/artefact-one-byte-changed")
def _(w):
    bundle = w.bundle()
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    return Api(_load(bundle), BundleError,
               ("Artefact `onnx` (model.onnx) does not match its recorded sha256", "Received: sha256="))


@case("bundle/saved-model-file-added")
def _(w):
    bundle = w.bundle()
    (bundle / "saved_model" / "extra.pb").write_bytes(b"\0")
    return Api(_load(bundle), BundleError,
               ("Artefact `saved_model` (saved_model) does not match its recorded sha256", "Received:"))


@case("bundle/path-is-a-file")
def _(w):
    path = w.file("bundle.zip", b"PK")
    return Api(_load(path), BundleError, ("A bundle must be a folder", f"Received: path={str(path)!r}"))


@case("bundle/path-missing")
def _(w):
    path = w.path / "no_bundle"
    return Api(_load(path), BundleError, ("A bundle must be a folder", f"Received: path={str(path)!r}"))


@case("bundle/unknown-artefact-requested")
def _(w):
    return Api(_load(w.bundle(), artefacts=["onnx", "pt"]), BundleError,
               ("Unknown artefacts requested; valid keys:", "'tflite'", "Received: ['pt']"))


@case("bundle/runner-of-an-unknown-artefact")
def _(w):
    from serving.bundle import load_bundle

    bundle = load_bundle(w.bundle(), artefacts=["onnx"])
    return Api(lambda: bundle.runner("pt"), ConfigError,
               ("has no artefact `pt`; valid keys:", "'onnx'", "Received: 'pt'"))


@case("bundle/runner-of-an-unverified-artefact")
def _(w):
    from serving.bundle import load_bundle

    bundle = load_bundle(w.bundle(), artefacts=["onnx"])
    return Api(lambda: bundle.runner("tflite"), BundleError,
               ("Artefact `tflite` was not verified when the bundle was loaded",
                "Received: verified=['onnx']"))


@case("bundle/artefact-swapped-after-load")
def _(w):
    from serving.bundle import load_bundle

    path = w.bundle()
    bundle = load_bundle(path, artefacts=["onnx"])
    data = bytearray((path / "model.onnx").read_bytes())
    data[-10] ^= 0x01
    (path / "model.onnx").write_bytes(bytes(data))
    return Api(lambda: bundle.runner("onnx", intra_op_num_threads=1), BundleError,
               ("Artefact `onnx` (model.onnx) does not match its recorded sha256", "Received: sha256="))


@case("bundle/preprocessing-size-negative")
def _(w):
    from serving.bundle import load_bundle

    path = w.bundle()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["input"]["preprocessing"]["size"] = [None, -32, 32]
    (path / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(path, artefacts=["onnx"])
    return Api(lambda: bundle.preprocess_spec, BundleError,
               ("`input.preprocessing` in manifest.json must hold positive numbers or null", "-32"))


@case("bundle/write-into-a-users-folder")
def _(w):
    from export.bundle_writer import write_bundle

    model = w.keras_model()
    w.file("mine/notes.txt", "mine")
    return Api(lambda: write_bundle(model, w.path / "mine", name="x", class_names=["bg", "fg"],
                                    preprocess_spec=tiny_preprocess_spec(), postprocess={"threshold": 0.5},
                                    formats=("onnx",)),
               ConfigError, ("`out_dir` must be a new path, an empty folder or an existing bundle",
                             f"Received: {str(w.path / 'mine')!r}"))


@case("bundle/write-under-a-file")
def _(w):
    from export.bundle_writer import write_bundle

    model = w.keras_model()
    path = w.file("notes.txt", "mine")
    return Api(lambda: write_bundle(model, path / "bundle", name="x", class_names=["bg", "fg"],
                                    preprocess_spec=tiny_preprocess_spec(), postprocess={"threshold": 0.5},
                                    formats=("onnx",)),
               ConfigError,
               ("`out_dir` (the bundle folder) must be a folder", f"but {path} on its path is a file"))


# --- runners and predict_image --------------------------------------------------------------------

def _runner_case(fmt: str, bad: str, w: Work) -> Api:
    runner = w.runner(fmt)
    x, received = bad_input(bad, (1, 16, 16, 1))
    return Api(lambda: runner.predict(x), DataError, (re.compile("^Input `image` " + received + "$"),))


for _fmt in ("onnx", "tflite"):
    for _bad in BAD_INPUTS:
        CASES.append(Case(f"runner/{_fmt}-{_bad}", lambda w, f=_fmt, b=_bad: _runner_case(f, b, w)))
for _bad in ("nan", "complex"):
    CASES.append(Case(f"runner/saved_model-{_bad}", lambda w, b=_bad: _runner_case("saved_model", b, w)))


@case("runner/onnx-float64-overflowing-float32")
def _(w):
    runner = w.runner("onnx")
    x = np.zeros((1, 16, 16, 1))
    x[0, 3, 3, 0] = 1e39
    return Api(lambda: runner.predict(x), DataError,
               ("Input `image` cast to float32 must be finite", "Received: 0 NaN and 1 inf values"))


@case("runner/onnx-wrong-rank")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.predict(np.zeros((16, 16, 1), np.float32)), DataError,
               ("Input `image` must have shape (None, None, None, 1)", "Received: shape=(16, 16, 1)"))


@case("runner/tflite-wrong-channels")
def _(w):
    runner = w.runner("tflite")
    return Api(lambda: runner.predict(np.zeros((1, 16, 16, 3), np.float32)), DataError,
               ("Input `image` must have shape", "Received: shape=(1, 16, 16, 3)"))


@case("runner/onnx-unknown-input-name")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.run({"x": np.zeros((1, 16, 16, 1), np.float32)}), DataError,
               ("onnx runner expects inputs ['image']", "Received: ['x']"))


@case("runner/onnx-ragged-input")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.predict([[1.0, 2.0], [3.0]]), DataError,
               ("Input `image` must be an array of real numbers", "Received: a list that is not one array"))


@case("runner/onnx-garbage-file")
def _(w):
    from serving.runners.registry import make_runner

    path = w.file("model.onnx", b"not a model")
    return Api(lambda: make_runner("onnx", path), BundleError,
               ("onnxruntime could not load the ONNX model", f"Received: path={str(path)!r}"))


@case("runner/tflite-garbage-file")
def _(w):
    from serving.runners.registry import make_runner

    path = w.file("model.tflite", b"not a model" * 10)
    return Api(lambda: make_runner("tflite", path, num_threads=1), BundleError,
               ("LiteRT could not load the TFLite model", f"Received: path={str(path)!r}"))


@case("runner/saved-model-missing")
def _(w):
    from serving.runners.registry import make_runner

    path = w.path / "saved_model"
    path.mkdir()
    return Api(lambda: make_runner("saved_model", path), BundleError,
               ("SavedModel directory must exist and hold saved_model.pb", f"Received: path={str(path)!r}"))


@case("runner/unknown-runtime")
def _(w):
    from serving.runners.registry import make_runner

    return Api(lambda: make_runner("torchscript", w.path / "m.pt"), ConfigError,
               ("Unknown runner `torchscript`; valid names:", "'onnx'", "Received: 'torchscript'"))


def _predict_image_case(w: Work, bad: str) -> Api:
    from serving.inference import predict_image

    runner = w.runner("onnx")
    image = synthetic_ct()
    array, received = bad_input(bad, image.shape)
    if bad in ("nan", "+inf", "-inf"):
        array = image.array.copy()
        array[tuple(n // 2 for n in image.shape)] = np.nan if bad == "nan" else np.inf
        counts = "1 NaN and 0 inf" if bad == "nan" else "0 NaN and 1 inf"
        received = r"must be finite\. Received: " + counts
    bad_image = image.with_array(array)
    return Api(lambda: predict_image(runner, bad_image, tiny_preprocess_spec()), DataError,
               (re.compile("^`image` " + received),))


for _bad in ("nan", "+inf", "complex", "string"):
    CASES.append(Case(f"runner/predict_image-{_bad}", lambda w, b=_bad: _predict_image_case(w, b)))


@case("runner/edge-bundle-nan")
def _(w):
    # The README's edge path end to end: a verified ONNX-only bundle, one NaN voxel in a scan.
    from serving.bundle import load_bundle
    from serving.inference import predict_image

    bundle = load_bundle(w.bundle(), artefacts=["onnx"])
    runner = bundle.runner("onnx", intra_op_num_threads=1)
    image = synthetic_ct()
    array = image.array.copy()
    array[3, 10, 10] = np.nan
    return Api(lambda: predict_image(runner, image.with_array(array), bundle.preprocess_spec), DataError,
               ("`image` must be finite", "Received: 1 NaN and 0 inf values in a (6, 32, 32) float32 array"))


@case("bundle/compare-max-cases-0")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=0), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: 0"))


@case("bundle/compare-max-cases-negative")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=-2), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: -2"))


@case("bundle/compare-max-cases-true")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=True), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: True"))


@case("bundle/compare-report-folder-is-a-file")
def _(w):
    from export.run_export import compare_bundle

    report = w.file("report.md", "mine")
    return Api(lambda: compare_bundle(w.path / "no_bundle", out_dir=report), ConfigError,
               ("`out_dir` (the report folder) must be a folder", f"Received: {report} is a file"))


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


# --- the one test ---------------------------------------------------------------------------------

def _check_message(text: str, needles, absent) -> None:
    assert "\n" not in text.strip(), f"more than one line:\n{text}"
    assert "Traceback" not in text, text
    for needle in needles:
        if isinstance(needle, re.Pattern):
            assert needle.search(text), (needle.pattern, text)
        else:
            assert needle in text, (needle, text)
    for word in absent:
        assert word not in text, (word, text)


def _run_cli_in_process(args) -> subprocess.CompletedProcess:
    from kerasmed.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse
        code = exit.code
    return subprocess.CompletedProcess(args, code, "", "")


def _run_cli_until(args, cwd, terminate_when) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([str(KERASMED), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not terminate_when():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never reached the point to stop it"
            time.sleep(0.05)
        time.sleep(0.5)  # well into the work
        assert proc.poll() is None, "the command finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, request, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a command that writes to a relative default path writes here
    w = Work(work, request)
    expect = case.build(w)
    watched = {"<work>": work, **{str(p): p for p in w.watched}}
    before = {name: tree_snapshot(p) for name, p in watched.items()}

    if isinstance(expect, Api):
        with pytest.raises(expect.error) as info:
            expect.call()
        _check_message(str(info.value), expect.needles, expect.absent)
    else:
        args = ("-q", *expect.args)
        if expect.terminate_when is not None:
            proc = _run_cli_until(args, work, expect.terminate_when)
        elif expect.in_process:
            capfd.readouterr()
            proc = _run_cli_in_process(args)
            proc.stdout, proc.stderr = capfd.readouterr()
        else:
            proc = kerasmed_process(*args, cwd=work)
        assert proc.returncode == expect.code, (proc.returncode, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if expect.code == 0:  # a narrower check is no error: it succeeds, stderr stays silent
            assert not lines, proc.stderr
            for needle in expect.needles:
                assert needle in proc.stdout, (needle, proc.stdout)
        else:
            assert len(lines) == 1, f"stderr must be one line:\n{proc.stderr}"
            assert lines[0].startswith("kerasmed"), lines[0]
            _check_message(lines[0], expect.needles, expect.absent)

    for name, path in watched.items():
        outputs = expect.outputs if name == "<work>" else ()
        changed = changes_outside(before[name], tree_snapshot(path), outputs)
        assert not changed, f"changed under {name} ({path}): {changed}"


# Every bad input that issue 6 lists, and the case that runs it.
ISSUE_6 = {
    "1. artefact file: ../../../etc/passwd": "bundle/file-dotdot-etc-passwd",
    "1. artefact file: /etc/passwd with a matching sha256": "bundle/file-absolute-etc-passwd",
    "1. manifest.json holding null": "bundle/manifest-null",
    "1. manifest.json holding 5": "bundle/manifest-5",
    "1. an artefact entry that is a string": "bundle/artefact-a-string",
    "1. an artefact entry with file: 5": "bundle/artefact-file-5",
    "2. demo --workdir deleting the user's data": "cli/demo-workdir-holding-users-data",
    "2. demo deleting data before validating the config": "cli/demo-bad-config-with-overwrite",
    "2. train into a finished run": "cli/train-into-a-finished-run",
    "2. a retrain failing on a truncated DICOM": "cli/train-overwrite-finished-run-with-a-truncated-dicom",
    "3. a narrower compare keeps the certificate": "cli/compare-narrower-keeps-the-certificate",
    "3. compare --max-cases 0": "cli/compare-max-cases-0",
    "3. compare --max-cases negative": "cli/compare-max-cases-negative",
    "4. one NaN voxel into the ONNX runner": "runner/onnx-nan",
    "4. one NaN voxel into the TFLite runner": "runner/tflite-nan",
    "4. a NaN image into predict_image": "runner/predict_image-nan",
    "4. preprocessing.pad_value: .nan": "config/pad-value-nan",
    "4. complex, string or None inputs": "runner/onnx-none",
    "5. patch size not a multiple of 2**depth": "cli/train-patch-size-not-multiple-of-2**depth",
    "5. a non-UTF-8 config": "cli/train-non-utf8-config",
    "5. a non-UTF-8 run config.yaml": "cli/evaluate-non-utf8-run-config",
    "5. a malformed --set value": "cli/train-set-malformed-yaml",
    "5. a reversed hu_window": "cli/train-hu-window-reversed",
    "5. masks of the wrong shape in evaluate": "cli/evaluate-mask-of-another-shape",
    "5. a truncated model.keras in export": "cli/export-truncated-model",
    "5. compare --output <a file>": "cli/compare-output-is-a-file",
    "5. demo --workdir <a file>": "cli/demo-workdir-is-a-file",
    "5. an empty YAML": "cli/train-empty-yaml",
    "5. num_classes: 3 with two class names": "cli/train-num-classes-3-with-two-names",
    "5. bad split_fractions accepted by train": "cli/train-bad-split-fractions",
    "5. an empty mask_path cell": "cli/train-empty-mask-path-cell",
    "5. a 200-byte DICOM": "data/dicom-200-byte-file",
    "5. the CLI advising overwrite=True": "cli/generate-into-a-users-folder",
    "5. demo's default --config outside the repository": "cli/demo-default-config-outside-the-repository",
    "6. SIGTERM during generate": "cli/generate-sigterm",
}


def test_the_corpus_is_large_distinct_and_covers_issue_6():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 100
    areas = {i.split("/")[0] for i in ids}
    assert areas == {"config", "data", "bundle", "runner", "cli"}, areas
    missing = {what: i for what, i in ISSUE_6.items() if i not in ids}
    assert not missing, missing
