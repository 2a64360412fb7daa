"""Which output folders kerasmed may replace: the ones it made, marked with a `.kerasmed` file.

Nothing a user made is ever deleted. A command that writes a whole folder (a synthetic dataset, a
training run, the demo's report) first checks it with `check_output_folder`: a folder that does not
exist, is empty, or carries the marker of the matching kind may be replaced; anything else is
refused with the flag that replaces it anyway (e.g. `--overwrite`). A file where a folder should
be, or a folder that cannot be written, is always refused, before anything is read or deleted.

The marker is a small JSON file written into every folder kerasmed creates::

    {"kind": "synthetic dataset", "created_by": "kerasmed generate", "kerasmed_version": "0.1.0",
     "note": "..."}

Deleting it protects the folder: kerasmed then treats it as the user's.

Every output flag goes through `check_output_folder` with its own kind (`BUNDLE` for `export
--output`, `PARITY_REPORT` for `compare --output`, `CHECK_REPORT`, `EXPLAIN_REPORT`, `BENCH`), so
a rerun replaces the command's own earlier output and nothing else. Outputs written by kerasmed
versions before the marker carry none; each command recognises its own by content (`legacy`, e.g.
`holds_only`). No output ever lands inside a model bundle (`enclosing_bundle`), whose artefacts
are verified by sha256, except the report folders a bundle's own `compare` writes.

Example:
    >>> check_output_folder("out/data", what="`data.root`", kind=DATASET, flag="--overwrite")
    False
    >>> with atomic_dir("out/data") as tmp:
    ...     write_marker(tmp, DATASET, created_by="kerasmed generate")
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from serving.atomic import atomic_write_text
from serving.errors import ConfigError, KerasmedError

MARKER = ".kerasmed"
DATASET = "synthetic dataset"
RUN = "training run"
REPORT = "demo report"
BUNDLE = "model bundle"
PARITY_REPORT = "parity report"
CHECK_REPORT = "data check report"
EXPLAIN_REPORT = "saliency report"  # Grad-CAM and occlusion maps
BENCH = "benchmark report"
_NOTE = ("kerasmed made this folder and may replace it on a rerun; delete this file to keep "
         "kerasmed from ever replacing it.")


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("kerasmed")
    except Exception:  # noqa: BLE001 - a copied `serving/` has no installed distribution
        return None


def write_marker(folder: str | os.PathLike, kind: str, created_by: str) -> Path:
    """Mark `folder` (which must exist) as made by kerasmed; returns the marker's path.

    Args:
        folder: a folder kerasmed created (or found empty).
        kind: what the folder holds, e.g. `DATASET`, `RUN`, `REPORT`.
        created_by: the command that made it, e.g. "kerasmed generate".
    """
    path = Path(folder) / MARKER
    info = {"kind": kind, "created_by": created_by, "kerasmed_version": _version(), "note": _NOTE}
    return atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of `folder`, or None when it has none (or an unreadable one: not ours then)."""
    try:
        info = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("kind"), str) else None


def user_entries(folder: str | os.PathLike) -> list[str]:
    """Names in `folder` other than the marker, sorted (empty if `folder` is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER)


def describe_entries(entries: list[str], shown: int = 3) -> str:
    """The first `shown` names, quoted, and how many more, e.g. "'a.txt', 'b' and 4 more"."""
    more = f" and {len(entries) - shown} more" if len(entries) > shown else ""
    return ", ".join(repr(e) for e in entries[:shown]) + more


def check_writable_folder(folder: str | os.PathLike, what: str,
                          error: type[KerasmedError] = ConfigError) -> None:
    """Refuse a `folder` that is a file, lies under a file, or cannot be created or written.

    Raises:
        error: naming `what`, the offending path and what it is.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise error(f"{what} must be a folder. Received: {folder} is a file")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"{what} must be a folder, but {existing} on its path is a file. Received: {folder}")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        why = "read-only: its file system is mounted read-only" if read_only else "permission denied"
        raise error(f"{what} must be writable, but {existing} is not ({why}). Received: {folder}")


def holds_only(patterns: Iterable[str], required: Iterable[str] = ()) -> Callable[[Path], bool]:
    """A `legacy` test for `check_output_folder`: the folder holds nothing but entries whose
    names match one of `patterns` (shell globs, e.g. "gradcam_*.png"), and every name in
    `required` (so that a user's lone `cases.csv` is not taken for a report)."""
    patterns, required = tuple(patterns), tuple(required)

    def test(folder: Path) -> bool:
        entries = user_entries(folder)
        return (all(any(fnmatch.fnmatchcase(e, p) for p in patterns) for e in entries)
                and all(r in entries for r in required))

    return test


def _absolute(path: str | os.PathLike) -> Path:
    """`path` made absolute with symlinks of its existing part resolved (no disk writes)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def enclosing_bundle(path: str | os.PathLike) -> Path | None:
    """The model bundle that `path` lies strictly inside, or None.

    A folder is a bundle if its marker says `BUNDLE`, or (a bundle written before the marker) its
    `manifest.json` passes the bundle schema (`serving.bundle.read_bundle_manifest`). Only the
    folders above `path` are looked at, so this reads a few small files at most.
    """
    from serving.bundle import read_bundle_manifest  # serving.bundle imports this module

    path = _absolute(path)
    for folder in path.parents:
        marker = read_marker(folder)
        if marker is not None and marker.get("kind") == BUNDLE:
            return folder
        if read_bundle_manifest(folder) is not None:
            return folder
    return None


def check_output_folder(
    folder: str | os.PathLike,
    what: str,
    kind: str,
    flag: str | None,
    overwrite: bool = False,
    owned: Callable[[dict], bool] | None = None,
    rule: str | None = None,
    error: type[KerasmedError] = ConfigError,
    legacy: Callable[[Path], bool] | None = None,
    bundle_reports: Iterable[str | os.PathLike] = (),
) -> bool:
    """Check, before anything is read or written, that a command may (re)write `folder` whole.

    Args:
        folder: the output folder.
        what: how the error names it, e.g. "`data.root`" or "`--workdir`'s data folder".
        kind: what the command writes there (`DATASET`, `RUN`, `REPORT`, `BUNDLE`, ...).
        flag: how the user asks to replace it anyway, e.g. "--overwrite (Python: overwrite=True)";
            None when the command has no such option (the error then says to choose another
            folder).
        overwrite: the user asked to replace whatever is there.
        owned: whether a folder with this marker may be replaced without `overwrite`; default: a
            marker of the same `kind`. Return False to require `overwrite` for every non-empty folder.
        rule: what the error says `folder` must be; default "absent, empty or a <kind> folder
            that kerasmed made".
        error: the error type raised.
        legacy: whether a non-empty folder without a marker is this command's output from a
            kerasmed version that wrote no marker (recognised by its content), and may be
            replaced too.
        bundle_reports: the only folders inside a model bundle that this output may be (e.g.
            `BUNDLE/parity` for `compare BUNDLE`); every other folder inside a bundle is refused,
            whatever `overwrite` says, since a bundle is verified by its sha256 entries.

    Returns:
        True if `folder` holds something that will be replaced, False if it is absent or empty.

    Raises:
        error: if `folder` is a file or not writable, or lies inside a model bundle (whatever
            `overwrite` says), or holds content kerasmed may not replace and `overwrite` is False.
    """
    folder = Path(folder)
    check_writable_folder(folder, what, error)
    bundle = enclosing_bundle(folder)
    if bundle is not None and _absolute(folder) not in {_absolute(p) for p in bundle_reports}:
        raise error(
            f"{what} must not lie inside the model bundle {bundle} (its files are verified against "
            f"the sha256 in its manifest.json; only `compare` writes there, into the bundle's own "
            f"parity/ or parity_narrower/). Choose a folder outside the bundle. Received: {folder}"
        )
    entries = user_entries(folder)
    if not entries:
        return False
    marker = read_marker(folder)
    if owned is None:
        owned = lambda m: m.get("kind") == kind  # noqa: E731
    if overwrite or (marker is not None and owned(marker)):
        return True
    if marker is None and legacy is not None and legacy(folder):
        return True
    if marker is None:
        why = f"it has no {MARKER} marker: kerasmed did not make it"
        if legacy is not None:
            why = f"it has no {MARKER} marker and is no {kind} of an earlier kerasmed version"
    else:
        why = f"its {MARKER} marker says: {marker.get('kind')} made by {marker.get('created_by')}"
    raise error(
        f"{what} must be {rule or f'absent, empty or a {kind} folder that kerasmed made'} ({why}). "
        + (f"Pass {flag} to replace it, deleting what it holds. " if flag else
           "Choose another output folder, or empty this one yourself. ")
        + f"Received: {folder} holding {describe_entries(entries)}"
    )
