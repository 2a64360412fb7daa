"""serving.bundle: a bundle never reaches outside its folder, and its manifest is schema-checked.

Every case works on a real copy of the shared tiny bundle in `tmp_path`. Escaping artefacts point
at files under `outside/`, a sibling of the bundle, whose sha256 the manifest records, so only the
containment rule can refuse them; an audit hook records every file opened while the bundle loads,
to show that nothing outside was opened.
"""

import contextlib
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from serving.bundle import artefact_sha256, load_bundle
from serving.errors import BundleError
from tests.helpers import copy_bundle

_OPENED: list[list[str]] = []  # one list per active `opened_paths()` block


def _audit(event, args):
    if event == "open" and _OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only inside `opened_paths()`


@contextlib.contextmanager
def opened_paths():
    """Record the path of every file opened by Python code (open, io.open, os.open) in the block."""
    paths: list[str] = []
    _OPENED.append(paths)
    try:
        yield paths
    finally:
        _OPENED.remove(paths)


def _assert_nothing_opened_in(paths, outside: Path):
    # Resolved now, after the fact: a symlink inside the bundle is opened under its own name.
    reached = [p for p in paths if Path(os.path.realpath(p)).is_relative_to(outside.resolve())]
    assert not reached, f"files outside the bundle were opened: {reached}"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _entry(manifest: dict, key: str) -> dict:
    return next(a for a in manifest["artefacts"] if a["key"] == key)


def _move_out(bundle: Path, name: str, outside: Path) -> Path:
    """Move `bundle/name` to `outside/name` and return the new place (same bytes, same sha256)."""
    target = outside / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(bundle / name, target)
    return target


# Each case turns a bundle copy into an escaping one and returns a pattern its error must match.
def _dotdot(bundle, outside):
    target = _move_out(bundle, "model.onnx", outside)
    manifest = _manifest(bundle)
    _entry(manifest, "onnx")["file"] = "../outside/model.onnx"
    _write_manifest(bundle, manifest)
    expected = "Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path inside the "
    expected += "bundle folder (not empty, not absolute, no `..`, no NUL byte). "
    return re.escape(expected + "Received: '../outside/model.onnx'") + "$", target


def _absolute(bundle, outside):
    target = _move_out(bundle, "model.onnx", outside)
    manifest = _manifest(bundle)
    _entry(manifest, "onnx")["file"] = str(target)
    assert _entry(manifest, "onnx")["sha256"] == artefact_sha256(target)  # only containment refuses
    _write_manifest(bundle, manifest)
    return r"Artefact `onnx` .*not absolute.*Received: " + re.escape(repr(str(target))), target


def _symlinked_file(bundle, outside):
    target = _move_out(bundle, "model.onnx", outside)
    (bundle / "model.onnx").symlink_to(target)
    return (
        r"Artefact `onnx` \(model\.onnx\) must resolve inside the bundle folder .*"
        + re.escape(f"-> {str(target.resolve())!r}"),
        target,
    )


def _symlinked_folder(bundle, outside):
    target = _move_out(bundle, "saved_model", outside)
    (bundle / "saved_model").symlink_to(target, target_is_directory=True)
    return r"Artefact `saved_model` \(saved_model\) must resolve inside the bundle folder", target


def _symlink_in_saved_model(bundle, outside):
    # The tree hash follows a file symlink and hashes the bytes, so the recorded sha256 still
    # matches: only the containment rule stands between the loader and the outside file.
    name = "saved_model/variables/variables.data-00000-of-00001"
    target = _move_out(bundle, name, outside)
    (bundle / name).symlink_to(target)
    assert artefact_sha256(bundle / "saved_model") == _entry(_manifest(bundle), "saved_model")[
        "sha256"
    ]
    return r"Artefact `saved_model` \(" + re.escape(name) + r"\) must resolve inside", target


def _folder_symlink_in_saved_model(bundle, outside):
    target = _move_out(bundle, "saved_model/variables", outside)
    (bundle / "saved_model/variables").symlink_to(target, target_is_directory=True)
    return r"Artefact `saved_model` \(saved_model/variables\) must resolve inside", target


def _symlinked_manifest(bundle, outside):
    target = _move_out(bundle, "manifest.json", outside)
    (bundle / "manifest.json").symlink_to(target)
    return r"manifest\.json must resolve inside the bundle folder", target


ESCAPES = {
    "dotdot": _dotdot,
    "absolute": _absolute,
    "symlinked_file": _symlinked_file,
    "symlinked_folder": _symlinked_folder,
    "symlink_in_saved_model": _symlink_in_saved_model,
    "folder_symlink_in_saved_model": _folder_symlink_in_saved_model,
    "symlinked_manifest": _symlinked_manifest,
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_artefact_outside_the_bundle_is_refused_unopened(bundle_dir, tmp_path, case):
    bundle = copy_bundle(bundle_dir, tmp_path / "bundle")
    outside = tmp_path / "outside"
    outside.mkdir()
    pattern, target = ESCAPES[case](bundle, outside)
    assert target.exists()
    with opened_paths() as opened, pytest.raises(BundleError, match=pattern) as info:
        load_bundle(bundle)
    assert "\n" not in str(info.value)
    _assert_nothing_opened_in(opened, outside)


def test_symlinks_that_stay_inside_the_bundle_load(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir, tmp_path / "bundle")
    (bundle / "blobs").mkdir()
    shutil.move(bundle / "model.onnx", bundle / "blobs" / "model.onnx")
    (bundle / "model.onnx").symlink_to(Path("blobs") / "model.onnx")
    assert load_bundle(bundle).runner("onnx", intra_op_num_threads=1).format == "onnx"


def test_folder_symlink_inside_saved_model_is_refused_even_inside_the_bundle(bundle_dir, tmp_path):
    # sha256_tree does not descend into linked folders: their files would run unverified.
    bundle = copy_bundle(bundle_dir, tmp_path / "bundle")
    shutil.move(bundle / "saved_model" / "variables", bundle / "variables")
    (bundle / "saved_model" / "variables").symlink_to(Path("..") / "variables")
    with pytest.raises(BundleError, match=r"\(saved_model/variables\) must not be a symlink to a folder"):
        load_bundle(bundle)


def test_symlink_loop_and_vanished_folder_are_bundle_errors(bundle_dir, tmp_path):
    bundle_path = copy_bundle(bundle_dir, tmp_path / "bundle")
    bundle = load_bundle(bundle_path)
    (bundle_path / "model.onnx").unlink()
    (bundle_path / "model.onnx").symlink_to("model.onnx")
    with pytest.raises(BundleError, match=r"Artefact `onnx` \(model\.onnx\) must resolve to a file"):
        bundle.runner("onnx")
    shutil.rmtree(bundle_path)
    with pytest.raises(BundleError, match="A bundle must be a folder"):
        bundle.runner("tflite")


def _swap_bytes(bundle, outside):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    return r"Artefact `onnx` \(model\.onnx\) does not match its recorded sha256"


def _swap_for_outside_link(bundle, outside):
    target = _move_out(bundle, "model.onnx", outside)  # same bytes: the sha256 still matches
    (bundle / "model.onnx").symlink_to(target)
    return r"Artefact `onnx` \(model\.onnx\) must resolve inside the bundle folder"


@pytest.mark.parametrize("swap", [_swap_bytes, _swap_for_outside_link], ids=["bytes", "link"])
def test_file_swapped_after_load_is_not_run(bundle_dir, tmp_path, swap):
    bundle_path = copy_bundle(bundle_dir, tmp_path / "bundle")
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = load_bundle(bundle_path)
    assert bundle.runner("onnx", intra_op_num_threads=1).format == "onnx"
    pattern = swap(bundle_path, outside)
    with opened_paths() as opened, pytest.raises(BundleError, match=pattern):
        bundle.runner("onnx", intra_op_num_threads=1)
    _assert_nothing_opened_in(opened, outside)
    assert bundle.runner("tflite").format == "tflite"  # the untouched artefacts still run


def _set(path, value):
    """A manifest edit: set the entry at `path` (keys and indices) to `value`."""

    def edit(manifest):
        node = manifest
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return manifest

    return edit


def _drop(key):
    def edit(manifest):
        del manifest[key]
        return manifest

    return edit


_DATA_MANIFEST = ("`extra.manifest` in manifest.json (the validation data's manifest) must be a relative "
                  "POSIX path inside the data folder (not empty, not absolute, no `..`, no NUL byte). ")
SCHEMA_CASES = {
    "null": (lambda m: None, "manifest.json must hold a JSON object. Received: None"),
    # `compare` used to open and parse whatever file the bundle named here.
    "data_manifest_dotdot": (_set(["extra", "manifest"], "../../etc/passwd"),
                             _DATA_MANIFEST + "Received: '../../etc/passwd'"),
    "data_manifest_absolute": (_set(["extra", "manifest"], "/etc/passwd"),
                               _DATA_MANIFEST + "Received: '/etc/passwd'"),
    "data_manifest_number": (_set(["extra", "manifest"], 5),
                             "`extra.manifest` in manifest.json must be a string or null. Received: 5"),
    "number": (lambda m: 5, "manifest.json must hold a JSON object. Received: 5"),
    "list": (lambda m: [], "manifest.json must hold a JSON object. Received: []"),
    "missing_task": (_drop("task"), "`task` in manifest.json must be a non-empty string. Received: None"),
    "input_not_object": (_set(["input"], "HU"), "`input` in manifest.json must be an object. Received: 'HU'"),
    "no_artefacts": (_set(["artefacts"], []), "`artefacts` in manifest.json must be a non-empty list"),
    "entry_is_string": (
        _set(["artefacts", 1], "saved_model"),
        "`artefacts[1]` in manifest.json must be an object. Received: 'saved_model'",
    ),
    "file_is_number": (
        _set(["artefacts", 1, "file"], 5),
        "`artefacts[1].file` in manifest.json must be a string. Received: 5",
    ),
    "sha256_not_hex": (
        _set(["artefacts", 0, "sha256"], "z" * 64),
        "`artefacts[0].sha256` in manifest.json must be 64 lowercase hex digits. Received: 'zzz",
    ),
    "sha256_upper_case": (
        _set(["artefacts", 0, "sha256"], "A" * 64),
        "`artefacts[0].sha256` in manifest.json must be 64 lowercase hex digits",
    ),
    "duplicate_key": (
        _set(["artefacts", 3, "key"], "keras"),
        "`artefacts[3].key` in manifest.json must be unique across artefacts",
    ),
    "precision_not_string": (
        _set(["artefacts", 2, "precision"], 32),
        "`artefacts[2].precision` in manifest.json must be a non-empty string. Received: 32",
    ),
    "empty_file": (
        _set(["artefacts", 3, "file"], ""),
        "Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path inside the bundle "
        "folder (not empty, not absolute, no `..`, no NUL byte). Received: ''",
    ),
    "nul_in_file": (
        _set(["artefacts", 3, "file"], "model.onnx\0.txt"),
        "Artefact `onnx` (`artefacts[3].file`) must be a relative POSIX path",
    ),
    "class_names_not_strings": (
        _set(["class_names"], [0, 1]),
        "`class_names` in manifest.json must be a list of strings. Received: [0, 1]",
    ),
    "threshold_nan": (
        _set(["postprocessing", "threshold"], math.nan),
        "`postprocessing.threshold` in manifest.json must be a number in [0, 1]. Received: nan",
    ),
    "threshold_above_one": (
        _set(["postprocessing", "threshold"], 1.5),
        "`postprocessing.threshold` in manifest.json must be a number in [0, 1]. Received: 1.5",
    ),
    "parity_not_object": (_set(["parity"], "pass"), "`parity` in manifest.json must be an object"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_manifest_breaking_the_schema_is_refused(bundle_dir, tmp_path, case):
    edit, message = SCHEMA_CASES[case]
    bundle = copy_bundle(bundle_dir, tmp_path / "bundle")
    (bundle / "manifest.json").write_text(json.dumps(edit(_manifest(bundle))))
    with opened_paths() as opened, pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    # Refused from the manifest alone: no artefact was opened or hashed.
    assert [Path(p).name for p in opened] == ["manifest.json"]
