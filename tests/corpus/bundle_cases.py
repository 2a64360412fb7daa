"""Corpus cases: bundle."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.errors import BundleError, ConfigError
from tests.corpus.harness import (
    CASES,
    Api,
    Case,
    Work,
    _sha256,
    case,
)
from tests.helpers import (
    tiny_preprocess_spec,
)

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
    from serving.bundle import load_bundle, write_manifest

    path = w.bundle()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["input"]["preprocessing"]["size"] = [None, -32, 32]
    write_manifest(path, manifest)  # sealed, as a buggy writer would have: only the accessor refuses
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
               ConfigError, ("`out_dir` (the bundle folder) must be absent, empty or a model bundle folder",
                             f"Received: {w.path / 'mine'} holding 'notes.txt'"))


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
