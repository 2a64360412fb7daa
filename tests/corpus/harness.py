"""How a corpus case is declared (`case`, `Api`, `Cli`) and the work folder it runs in."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from export.demo import PROFILES
from kerasmed.config import load_config
from tests.helpers import (
    copy_bundle,
)

ROOT = Path(__file__).resolve().parents[2]
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
    # The command's process may write no file past this many bytes (RLIMIT_FSIZE): such a write
    # fails with EFBIG, as one on a full disk fails with ENOSPC (`limited_file_size`).
    file_size_limit: int | None = None
    # Run as an ordinary user would: as root, without the capabilities that ignore file modes,
    # so that a folder made read-only by chmod refuses writes (a subprocess only; `unprivileged`).
    unprivileged: bool = False


@contextlib.contextmanager
def limited_file_size(limit: int | None) -> Iterator[None]:
    """Lower this process's RLIMIT_FSIZE soft limit to `limit` bytes in the block (None: no
    change). Python ignores SIGXFSZ, so a write past it fails with EFBIG instead of killing.

    No bytecode is written in the block: importlib writes a `.pyc` without checking for a short
    write, and under the limit a module imported there would leave a truncated `.pyc` in the venv
    that breaks every later import of it ("marshal data too short")."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sys.dont_write_bytecode = dont_write


def limited_env(expect: Cli) -> dict[str, str]:
    """Environment of a command's subprocess under a file-size limit: no bytecode written (see
    `limited_file_size`)."""
    return {"PYTHONDONTWRITEBYTECODE": "1"} if expect.file_size_limit is not None else {}


# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (<linux/capability.h>): what lets root write
# into a folder whose modes forbid it. PR_CAPBSET_DROP removes one from the bounding set, so the
# command exec'd next never gets it.
_FILE_MODE_CAPABILITIES = (1, 2, 3)
_PR_CAPBSET_DROP = 24


def preexec(expect: Cli) -> Callable[[], None] | None:
    """What the command's subprocess runs before `kerasmed` starts, for `expect`'s file-size limit
    and `unprivileged` (None when neither is asked)."""
    if expect.file_size_limit is None and not expect.unprivileged:
        return None
    # Resolved here: between fork and exec a child of this threaded process must not dlopen.
    prctl = ctypes.CDLL(None, use_errno=True).prctl if expect.unprivileged and os.geteuid() == 0 else None
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]

    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death, past the limit
        if expect.file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (expect.file_size_limit, hard))
        if prctl is not None:
            for capability in _FILE_MODE_CAPABILITIES:
                if prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return setup


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

    def env(self, name: str, value: str) -> None:
        """Set an environment variable for the case's command (e.g. `TF_CONFIG`); undone after it."""
        self._request.getfixturevalue("monkeypatch").setenv(name, value)

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
