"""Load a model bundle: `manifest.json` plus artefacts, every one checked against its sha256.

A bundle is a folder written by `export.bundle_writer.write_bundle`:

    bundle/
      manifest.json      task, class names, input/output contract, preprocessing, post-processing,
                         artefacts (format, precision, file, sha256, converter), versions, parity
      model.keras  saved_model/  model.tflite  model.onnx  ...

Loading checks `manifest.json` against its schema (`validate_manifest`), then refuses the bundle on
any artefact path that reaches outside the folder, any missing file or any hash mismatch, so a
device never runs a model other than the one that passed parity. An artefact `file` must be a
relative POSIX path that resolves, symlinks followed, inside the bundle folder; a directory
artefact (SavedModel) may hold no symlink that leaves the bundle or points at a folder. Every path
is checked before any file is opened or hashed. The validation data's manifest a bundle records
(`extra.manifest`, read by `kerasmed compare`) must likewise be a relative path without `..`, which
`data_manifest_path` resolves inside the data folder.

`manifest.json` is strict JSON (no NaN or Infinity, which e.g. JavaScript's `JSON.parse` rejects:
`manifest_text` writes non-finite numbers as null) and records `manifest_sha256`, the sha256 of its
own canonical content (`manifest_digest`). A manifest edited by hand after kerasmed wrote it no
longer matches and is refused, so its parity certificate is never recorded over the edit. This
detects edits, not forgery: anyone can recompute the digest. Manifests of `manifest_version` 1
(before the digest) load without it.

Example:
    >>> bundle = load_bundle("runs/lung/bundle")
    >>> runner = bundle.runner("onnx")
    >>> probs, _, _ = predict_image(runner, image, bundle.preprocess_spec)
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from serving.atomic import atomic_write_text
from serving.errors import BundleError, ConfigError
from serving.ownership import BUNDLE, check_output_folder
from serving.preprocessing import PreprocessSpec, preprocessing_version
from serving.runners.base_runner import Runner
from serving.runners.registry import get_runner_class, make_runner, runner_names

MANIFEST_NAME = "manifest.json"
# Version 2: strict JSON and `manifest_sha256`, which version-2 manifests must hold.
MANIFEST_VERSION = 2
DIGEST_KEY = "manifest_sha256"
REPORT_DIRS = ("parity", "parity_narrower")  # what `compare` writes inside a bundle
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def _short(value: Any, limit: int = 120) -> str:
    """`repr(value)` cut to `limit` characters, so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _require(ok: bool, field: str, rule: str, value: Any) -> None:
    """Raise the schema error "`field` in manifest.json must be <rule>. Received: <value>"."""
    if not ok:
        raise BundleError(f"`{field}` in {MANIFEST_NAME} must be {rule}. Received: {_short(value)}")


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def artefact_key(entry: dict[str, Any]) -> str:
    """The key an artefact is known by: its `key`, else its `format`."""
    return entry.get("key", entry.get("format"))


def _check_relative(key: str, field: str, name: str) -> None:
    """Refuse, without touching the disk, an artefact path that is not a plain relative path."""
    _check_plain_relative(name, f"Artefact `{key}` (`{field}`)", "the bundle folder")


def _check_plain_relative(name: str, what: str, inside: str) -> None:
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        not name
        or "\0" in name
        or posix.is_absolute()
        or windows.drive
        or windows.root
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise BundleError(
            f"{what} must be a relative POSIX path inside {inside} "
            f"(not empty, not absolute, no `..`, no NUL byte). Received: {name!r}"
        )
    try:
        os.fsencode(name)
    except UnicodeError as err:  # e.g. a lone surrogate ("\ud800"), which JSON can carry
        raise BundleError(
            f"{what} must be a file name the file system can encode. "
            f"Received: {_short(name)} ({err.reason})"
        ) from err


def _check_artefact(entry: Any, field: str) -> str:
    """Check one `artefacts[i]` entry against the schema and return its key."""
    _require(isinstance(entry, dict), field, "an object", entry)
    fmt = entry.get("format")
    _require(_is_str(fmt), f"{field}.format", "a non-empty string", fmt)
    for name in ("key", "precision", "converter"):
        if name in entry:
            _require(_is_str(entry[name]), f"{field}.{name}", "a non-empty string", entry[name])
    _require(isinstance(entry.get("file"), str), f"{field}.file", "a string", entry.get("file"))
    sha = entry.get("sha256")
    ok = isinstance(sha, str) and _SHA256.fullmatch(sha) is not None
    _require(ok, f"{field}.sha256", "64 lowercase hex digits", sha)
    key = artefact_key(entry)
    _check_relative(key, f"{field}.file", entry["file"])
    return key


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check a parsed `manifest.json` against the bundle schema before anything uses it.

    The schema (what `export.bundle_writer.write_bundle` writes; other entries pass unchecked):
    a JSON object with `task` (non-empty string), `input` (object) and `artefacts`, a non-empty
    list of objects with `format` and `file` (strings), `sha256` (64 lowercase hex digits) and
    optionally `key`, `precision` and `converter` (non-empty strings); keys (`key`, else
    `format`) are unique and every `file` is a relative path without `..`. Optional
    `class_names` is a list of strings, `postprocessing` an object whose `threshold`, if any, is
    a finite number in [0, 1], and `parity` an object. Optional `input.fingerprint` (the training
    set's dataset fingerprint) is an object of finite numbers or lists of finite numbers.
    `input.preprocessing.version`, if any, is a preprocessing version this serving implements.
    `extra.manifest`, if any and not null, is a relative path without `..` (the validation data's
    manifest, under the data folder).

    Args:
        manifest: the value `json.loads` returned.

    Returns:
        `manifest`, unchanged.

    Raises:
        BundleError: naming the first field that breaks the schema and what it holds.
    """
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_NAME} must hold a JSON object. Received: {_short(manifest)}")
    _require(_is_str(manifest.get("task")), "task", "a non-empty string", manifest.get("task"))
    _require(isinstance(manifest.get("input"), dict), "input", "an object", manifest.get("input"))
    artefacts = manifest.get("artefacts")
    ok = isinstance(artefacts, list) and len(artefacts) > 0
    _require(ok, "artefacts", "a non-empty list of objects", artefacts)
    seen: set[str] = set()
    for i, entry in enumerate(artefacts):
        key = _check_artefact(entry, f"artefacts[{i}]")
        rule = "unique across artefacts (an entry without `key` is known by its `format`)"
        _require(key not in seen, f"artefacts[{i}].key", rule, key)
        seen.add(key)
    if "class_names" in manifest:
        names = manifest["class_names"]
        ok = isinstance(names, list) and all(isinstance(n, str) for n in names)
        _require(ok, "class_names", "a list of strings", names)
    if "postprocessing" in manifest:
        post = manifest["postprocessing"]
        _require(isinstance(post, dict), "postprocessing", "an object", post)
        if "threshold" in post:
            t = post["threshold"]
            _require(_is_number(t) and 0.0 <= t <= 1.0, "postprocessing.threshold",
                     "a number in [0, 1]", t)
    if "parity" in manifest:
        _require(isinstance(manifest["parity"], dict), "parity", "an object", manifest["parity"])
    if isinstance(manifest["input"].get("preprocessing"), dict):
        try:  # refused at load: the model was trained on preprocessing this code does not do
            preprocessing_version(manifest["input"]["preprocessing"])
        except ConfigError as err:
            raise BundleError(f"{MANIFEST_NAME}: {err}") from err
    if "fingerprint" in manifest["input"]:
        fp = manifest["input"]["fingerprint"]
        _require(isinstance(fp, dict), "input.fingerprint", "an object", fp)
        for key, value in fp.items():
            ok = all(_is_number(v) for v in (value if isinstance(value, list) else [value]))
            _require(ok, f"input.fingerprint.{key}", "a finite number or a list of them", value)
    extra = manifest.get("extra")
    if isinstance(extra, dict) and extra.get("manifest") is not None:
        # `compare` opens this file under the data folder: contained like an artefact path.
        name = extra["manifest"]
        _require(isinstance(name, str), "extra.manifest", "a string or null", name)
        _check_plain_relative(name, f"`extra.manifest` in {MANIFEST_NAME} (the validation data's "
                              "manifest)", "the data folder")
    return manifest


def finite_json(value: Any) -> Any:
    """`value` (JSON-ready: dicts, lists, numbers, strings, None) with every non-finite number
    (NaN, Infinity) replaced by None, so that strict JSON can hold it; numpy numbers become
    Python ones."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, int):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical content: every entry except `manifest_sha256` itself,
    as compact JSON with sorted keys, so that formatting does not count but any value does.

    Raises:
        ValueError: if the manifest holds a non-finite number (pass it through `finite_json`).
    """
    content = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def manifest_text(manifest: dict[str, Any]) -> str:
    """The text of `manifest.json`: strict JSON (non-finite numbers as null), indented, with
    `manifest_sha256` recorded last, and `manifest_version` raised to `MANIFEST_VERSION`."""
    content = finite_json({k: v for k, v in manifest.items() if k != DIGEST_KEY})
    content["manifest_version"] = max(MANIFEST_VERSION, _version_of(content))
    content[DIGEST_KEY] = manifest_digest(content)
    return json.dumps(content, indent=2, allow_nan=False) + "\n"


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write `folder/manifest.json` atomically as `manifest_text` gives it; returns its path."""
    return atomic_write_text(Path(folder) / MANIFEST_NAME, manifest_text(manifest))


def _version_of(manifest: dict[str, Any]) -> int:
    version = manifest.get("manifest_version")
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


def check_manifest_digest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a manifest whose content no longer matches its recorded `manifest_sha256`.

    A manifest of `manifest_version` 1 (written before the digest) passes without one.

    Raises:
        BundleError: if the digest is missing from a version-2 manifest, or does not match.
    """
    recorded = manifest.get(DIGEST_KEY)
    if recorded is None and _version_of(manifest) < 2:
        return
    try:
        actual = manifest_digest(manifest)
    except ValueError:  # NaN or Infinity: kerasmed never writes them into a version-2 manifest
        actual = "none (it holds NaN or Infinity)"
    if recorded != actual:
        raise BundleError(
            f"{path} was edited after kerasmed wrote it: its content no longer matches its "
            f"recorded `{DIGEST_KEY}`, so the bundle (and its parity certificate) is refused; "
            f"export the bundle again. Received: sha256={actual}, recorded {_short(recorded)}"
        )


def read_bundle_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed manifest of `folder` if it holds a `manifest.json` that passes the bundle
    schema (`validate_manifest`), else None. Reads that one file and nothing else."""
    path = Path(folder) / MANIFEST_NAME
    try:
        if not path.is_file():
            return None
        return validate_manifest(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError, BundleError):
        return None


def is_replaceable_bundle(folder: str | os.PathLike) -> bool:
    """Whether `folder`, which has no `.kerasmed` marker, is a bundle that a kerasmed version
    before the marker wrote, and so may be replaced by `export`.

    Such a bundle is recognised by its content: its `manifest.json` passes the bundle schema and
    the folder holds nothing but that manifest, the artefacts it lists and the reports `compare`
    writes (`parity/`, `parity_narrower/`). A stray `manifest.json` that is no bundle manifest,
    or any other file beside a bundle's, makes it the user's folder.
    """
    manifest = read_bundle_manifest(folder)
    if manifest is None:
        return False
    known = {MANIFEST_NAME, *REPORT_DIRS}
    known.update(PurePosixPath(a["file"]).parts[0] for a in manifest["artefacts"])
    return all(p.name in known for p in Path(folder).iterdir())


def check_bundle_folder(out_dir: str | os.PathLike, what: str = "`out_dir` (the bundle folder)") -> bool:
    """Refuse, before any work, a bundle folder that `export` (`write_bundle`) may not replace.

    It may be absent, empty, a bundle kerasmed made (its `.kerasmed` marker says `BUNDLE`), or a
    bundle of a kerasmed version before the marker, recognised by its content
    (`is_replaceable_bundle`: a valid bundle manifest, and nothing beside it but its
    artefacts and parity reports). A folder with a stray `manifest.json`, or with the user's
    files beside a bundle, is refused; so is any folder inside another bundle.

    Returns:
        True if an existing bundle will be replaced.

    Raises:
        ConfigError: naming `what`, the folder and what it holds.
    """
    return check_output_folder(out_dir, what, BUNDLE, flag=None, legacy=is_replaceable_bundle)


def data_manifest_path(root: str | os.PathLike, name: str) -> Path:
    """`root/name`, the validation data's manifest a bundle records (`extra.manifest`), refused
    unless `name` is a plain relative path that resolves (symlinks followed) inside `root`.
    Nothing is opened.

    Raises:
        BundleError: naming the recorded path and the data folder.
    """
    what = f"`extra.manifest` in {MANIFEST_NAME} (the validation data's manifest)"
    _check_plain_relative(name, what, "the data folder")
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / name))
    if root_real not in real.parents:
        raise BundleError(
            f"{what} must resolve inside the data folder {str(root_real)!r}. "
            f"Received: {name!r} -> {str(real)!r}"
        )
    return Path(root) / name


def _is_number(value: Any) -> bool:
    # An int is always finite, and may be too large for math.isfinite's float().
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (isinstance(value, int) or math.isfinite(value))


def _real_root(root: Path) -> Path:
    """The bundle folder with every symlink resolved."""
    try:
        return root.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise BundleError(f"A bundle must be a folder. Received: path={str(root)!r}: {err}") from err


def _inside(root_real: Path, path: Path, what: str) -> Path:
    """`path` resolved (symlinks followed, must exist), refused unless strictly inside `root_real`.

    Only `lstat`/`readlink` happen here: nothing is opened.
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError as err:
        raise BundleError(
            f"{what} is listed in {MANIFEST_NAME} but its file is missing. "
            f"Received: {str(path)!r} does not exist"
        ) from err
    except (OSError, RuntimeError) as err:  # a symlink loop is RuntimeError before Python 3.13
        raise BundleError(
            f"{what} must resolve to a file inside the bundle folder. Received: {str(path)!r}: {err}"
        ) from err
    if root_real not in real.parents:
        raise BundleError(
            f"{what} must resolve inside the bundle folder {str(root_real)!r}. "
            f"Received: {str(path)!r} -> {str(real)!r}"
        )
    return real


def _contained_artefact(root: Path, root_real: Path, entry: dict[str, Any]) -> Path:
    """The resolved path of one artefact, refused unless it and everything in it stay inside.

    A directory artefact may hold symlinks to files inside the bundle (they are hashed by
    content), but no symlink that leaves the bundle or points at a folder: `sha256_tree` does not
    descend into linked folders, so their files would be run without being verified.
    """
    key = artefact_key(entry)
    real = _inside(root_real, root / entry["file"], f"Artefact `{key}` ({entry['file']})")
    if real.is_dir():
        for dirpath, dirnames, filenames in os.walk(real):  # does not follow linked folders
            for name in dirnames + filenames:
                link = Path(dirpath, name)
                if not link.is_symlink():
                    continue
                rel = link.relative_to(real).as_posix()
                what = f"Artefact `{key}` ({entry['file']}/{rel})"
                if _inside(root_real, link, what).is_dir():
                    raise BundleError(
                        f"{what} must not be a symlink to a folder, whose files the sha256 would "
                        f"not cover. Received: {str(link)!r} -> {str(link.resolve())!r}"
                    )
    return real


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(
            f"A bundle must hold {MANIFEST_NAME}. Received: path={str(root)!r} without it"
        )
    _inside(_real_root(root), manifest_path, MANIFEST_NAME)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers longer than Python
    # converts (4300 digits); RecursionError is nesting deeper than the parser's stack.
    except (OSError, ValueError, RecursionError) as err:
        raise BundleError(
            f"{MANIFEST_NAME} must be readable JSON. Received: {str(manifest_path)!r}: {err}"
        ) from err
    return validate_manifest(manifest)


def verify_artefacts(root: Path, artefacts: list[dict[str, Any]]) -> list[Path]:
    """Check every artefact stays inside `root`, exists and matches its recorded sha256.

    Every entry is checked against the schema and every path for containment first, so a bundle
    with one escaping path is refused before any artefact file is opened or hashed.

    Args:
        root: the bundle folder.
        artefacts: manifest artefact entries (all of them, or the ones to be run).

    Returns:
        The resolved path of each artefact, in order.

    Raises:
        BundleError: naming the first artefact that is malformed, reaches outside the bundle, is
            missing or does not match.
    """
    if not isinstance(artefacts, list):
        raise BundleError(
            f"`artefacts` in {MANIFEST_NAME} must be a list of objects. Received: "
            f"{_short(artefacts)}"
        )
    for i, entry in enumerate(artefacts):
        _check_artefact(entry, f"artefacts[{i}]")
    root = Path(root)
    root_real = _real_root(root)
    paths = [_contained_artefact(root, root_real, entry) for entry in artefacts]
    for entry, path in zip(artefacts, paths):
        try:
            actual = artefact_sha256(path)
        except OSError as err:
            raise BundleError(
                f"Artefact `{artefact_key(entry)}` ({entry['file']}) must be readable. "
                f"Received: {type(err).__name__}: {err}"
            ) from err
        if actual != entry["sha256"]:
            raise BundleError(
                f"Artefact `{artefact_key(entry)}` ({entry['file']}) does not match its recorded "
                f"sha256; the bundle was modified after export and is refused. "
                f"Received: sha256={actual}, manifest sha256={entry['sha256']}"
            )
    return paths


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
        except (ValueError, OverflowError) as err:  # ConfigError too: the bundle is at fault
            raise BundleError(
                f"`input.preprocessing` in {MANIFEST_NAME} must hold positive numbers or null "
                f"per axis in `target_spacing` and `size`, a finite `pad_value`, and valid "
                f"version-2 steps (clip, crop_foreground, multiple_of, zscore, order). Received: "
                f"{_short(self.manifest['input']['preprocessing'])} ({type(err).__name__}: {err})"
            ) from err

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The training set's dataset fingerprint (`input.fingerprint`), None if not recorded."""
        fp = self.manifest["input"].get("fingerprint")
        return None if fp is None else dict(fp)

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
        return [artefact_key(a) for a in self.artefacts]

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
        """Build the runner for one artefact, re-verified just before the runtime opens it.

        `load_bundle` verified the artefact once, but its file may have been swapped since. So
        this checks it again (path inside the bundle, sha256 of the bytes on disk) immediately
        before constructing the runner, and refuses a file that no longer matches. Re-hashing
        rather than handing the runtime verified bytes keeps one rule for every format,
        SavedModel folders and `.keras` files included; what remains is the moment between this
        hash and the runtime's own open, which only a writer racing that call could use.

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
            BundleError: if the artefact was not verified by `load_bundle`, or now reaches
                outside the bundle, is missing or no longer matches its sha256.
        """
        entry = self.artefact(key)
        if artefact_key(entry) not in self.verified:
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
        verify_artefacts(self.path, [entry])
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
        BundleError: if the folder or manifest is missing or breaks the schema
            (`validate_manifest`), or any artefact path reaches outside the folder, or any
            artefact is missing or does not match its recorded sha256 (the message names the
            field or artefact), or the manifest was edited after kerasmed wrote it
            (`check_manifest_digest`). Paths are all checked before any artefact is opened.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"A bundle must be a folder. Received: path={str(root)!r}")
    manifest = _read_manifest(root)
    entries = manifest["artefacts"]
    if artefacts is not None:
        known = {artefact_key(e): e for e in entries}
        unknown = sorted(set(artefacts) - set(known))
        if unknown:
            raise BundleError(
                f"Unknown artefacts requested; valid keys: {sorted(known)}. Received: {unknown}"
            )
        entries = [known[k] for k in artefacts]
    verify_artefacts(root, entries)
    # Last, so that a broken or escaping entry is named by its own rule first.
    check_manifest_digest(manifest, root / MANIFEST_NAME)
    return Bundle(root, manifest, {artefact_key(e) for e in entries})
