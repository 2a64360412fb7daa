"""Load a model bundle: `manifest.json` plus artefacts, every one checked against its sha256.

A bundle is a folder written by `export.bundle_writer.write_bundle`:

    bundle/
      manifest.json      task, class names, input/output contract, preprocessing, post-processing,
                         artefacts (format, precision, file, sha256, converter), versions, parity
      model.keras  saved_model/  model.tflite  model.onnx  ...

Loading verifies every artefact and refuses the bundle on any missing file or hash mismatch, so a
device never runs a model other than the one that passed parity.

Example:
    >>> bundle = load_bundle("runs/lung/bundle")
    >>> runner = bundle.runner("onnx")
    >>> probs, _, _ = predict_image(runner, image, bundle.preprocess_spec)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from serving.errors import BundleError, ConfigError
from serving.preprocessing import PreprocessSpec
from serving.runners.base_runner import Runner
from serving.runners.registry import get_runner_class, make_runner, runner_names

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Deterministic hex sha256 of a directory (e.g. a SavedModel).

    Hashes, for every regular file in sorted order of its POSIX path relative to `path`, the line
    `"<relative path>\\0<file sha256>\\n"`. Renaming, adding, removing or editing any file changes
    it; file timestamps and the directory's own location do not.
    """
    root = Path(path)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for rel in files:
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


def artefact_sha256(path: str | os.PathLike) -> str:
    """sha256 of an artefact: `sha256_file` for a file, `sha256_tree` for a directory.

    Raises:
        BundleError: if `path` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        return sha256_tree(path)
    if path.is_file():
        return sha256_file(path)
    raise BundleError(f"Artefact must exist to be hashed. Received: path={str(path)!r}")


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(
            f"A bundle must hold {MANIFEST_NAME}. Received: path={str(root)!r} without it"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(
            f"{MANIFEST_NAME} must be readable JSON. Received: {str(manifest_path)!r}: {err}"
        ) from err
    missing = [k for k in ("task", "input", "artefacts") if k not in manifest]
    if not isinstance(manifest, dict) or missing or not isinstance(manifest["artefacts"], list):
        raise BundleError(
            f"{MANIFEST_NAME} must be an object with `task`, `input` and an `artefacts` list. "
            f"Received: {str(manifest_path)!r} missing {missing or 'a valid artefacts list'}"
        )
    return manifest


def verify_artefacts(root: Path, artefacts: list[dict[str, Any]]) -> None:
    """Check every artefact exists and matches its recorded sha256.

    Raises:
        BundleError: naming the first artefact that is missing or does not match.
    """
    for entry in artefacts:
        key = entry.get("key", entry.get("format"))
        name, expected = entry.get("file"), entry.get("sha256")
        if not name or not expected:
            raise BundleError(
                f"Every artefact entry must record `file` and `sha256`. Received: artefact "
                f"`{key}` = {entry}"
            )
        path = root / name
        if not path.exists():
            raise BundleError(
                f"Artefact `{key}` is listed in {MANIFEST_NAME} but its file is missing. "
                f"Received: {str(path)!r} does not exist"
            )
        actual = artefact_sha256(path)
        if actual != expected:
            raise BundleError(
                f"Artefact `{key}` ({name}) does not match its recorded sha256; the bundle was "
                f"modified after export and is refused. Received: sha256={actual}, "
                f"manifest sha256={expected}"
            )


class Bundle:
    """A verified bundle. Build it with `load_bundle`.

    Attributes:
        path: the bundle folder.
        manifest: the parsed `manifest.json`.
        artefacts: the manifest's artefact entries (dicts with key, format, precision, file,
            sha256, converter, ...).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], verified: set[str] | None = None):
        self.path = path
        self.manifest = manifest
        self.artefacts: list[dict[str, Any]] = list(manifest["artefacts"])
        self.verified = verified if verified is not None else set(self.artefact_keys)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names", []))

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """The preprocessing every input must go through (`input.preprocessing`)."""
        try:
            return PreprocessSpec.from_dict(self.manifest["input"]["preprocessing"])
        except (KeyError, TypeError) as err:
            raise BundleError(
                f"{MANIFEST_NAME} must record `input.preprocessing` with `target_spacing` and "
                f"`size`. Received: input={self.manifest.get('input')!r}"
            ) from err

    @property
    def postprocess(self) -> dict[str, Any]:
        return dict(self.manifest.get("postprocessing", {}))

    @property
    def threshold(self) -> float:
        """Foreground probability threshold (post-processing), 0.5 when not recorded."""
        return float(self.postprocess.get("threshold", 0.5))

    @property
    def parity(self) -> dict[str, Any]:
        return dict(self.manifest.get("parity", {"verdict": "not_run"}))

    @property
    def artefact_keys(self) -> list[str]:
        return [a.get("key", a["format"]) for a in self.artefacts]

    def artefact(self, key: str) -> dict[str, Any]:
        """The artefact entry whose `key` is `key`, else the first whose `format` is `key`.

        Raises:
            ConfigError: if no artefact matches, listing the valid keys.
        """
        for entry in self.artefacts:
            if entry.get("key") == key:
                return entry
        for entry in self.artefacts:
            if entry.get("format") == key:
                return entry
        raise ConfigError(
            f"Bundle {str(self.path)!r} has no artefact `{key}`; valid keys: "
            f"{self.artefact_keys}. Received: {key!r}"
        )

    def artefact_path(self, key: str) -> Path:
        return self.path / self.artefact(key)["file"]

    def runner(self, key: str, *, use_tf32: bool = False, **options) -> Runner:
        """Build the runner for one artefact.

        Args:
            key: an artefact key ("onnx", "tflite", "saved_model", "keras", "tflite_fp16", ...)
                or a format name.
            use_tf32: let a CUDA GPU run float32 convolutions and GEMMs in TF32. Off by default,
                so float32 artefacts compute in float32 on every device. Passed to runners that
                take it (`Runner.accepts_use_tf32`: the ONNX runner); the others have no such
                mode (LiteRT runs on the CPU) or report a process-wide one (TensorFlow).
            **options: passed to the runner's constructor (e.g. `intra_op_num_threads`).

        Raises:
            ConfigError: for an unknown artefact, or the "keras" runner when `kerasmed` has not
                been imported (serving never imports it).
        """
        entry = self.artefact(key)
        if entry.get("key", entry["format"]) not in self.verified:
            raise BundleError(
                f"Artefact `{key}` was not verified when the bundle was loaded; load it with "
                f"load_bundle(path, artefacts=[...{key!r}]). Received: verified={sorted(self.verified)}"
            )
        fmt = entry["format"]
        if fmt not in runner_names():
            hint = " (import kerasmed.keras_runner to register it)" if fmt == "keras" else ""
            raise ConfigError(
                f"No runner is registered for format `{fmt}`{hint}; valid names: "
                f"{runner_names()}. Received: artefact `{key}`"
            )
        if get_runner_class(fmt).accepts_use_tf32:
            options["use_tf32"] = use_tf32
        return make_runner(fmt, self.path / entry["file"], **options)

    def __repr__(self) -> str:
        return f"Bundle(path={str(self.path)!r}, artefacts={self.artefact_keys})"


def load_bundle(path: str | os.PathLike, artefacts: list[str] | None = None) -> Bundle:
    """Read `manifest.json` and verify every artefact's sha256.

    Args:
        path: the bundle folder.
        artefacts: verify (and allow running) only these artefact keys, e.g. `["onnx"]` on an
            edge device that received just `model.onnx` and `manifest.json`. Default: all.

    Returns:
        The verified `Bundle`.

    Raises:
        BundleError: if the folder or manifest is missing or malformed, or any artefact is missing
            or does not match its recorded sha256 (the message names the artefact).
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"A bundle must be a folder. Received: path={str(root)!r}")
    manifest = _read_manifest(root)
    entries = manifest["artefacts"]
    if artefacts is not None:
        known = {e.get("key", e.get("format")): e for e in entries}
        unknown = sorted(set(artefacts) - set(known))
        if unknown:
            raise BundleError(
                f"Unknown artefacts requested; valid keys: {sorted(known)}. Received: {unknown}"
            )
        entries = [known[k] for k in artefacts]
    verify_artefacts(root, entries)
    return Bundle(root, manifest, {e.get("key", e.get("format")) for e in entries})
