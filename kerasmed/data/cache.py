"""Preprocess every case once into an on-disk cache that the tf.data pipeline memory-maps.

Layout under the cache root (`data.cache_dir`, default `<data.root>/cache`)::

    <spec_key>/                    one preprocessing spec: `.kerasmed` marker, `spec.json`, `.lock`
        cases/<case_key>/          one case: image.npy (Z, H, W) float32, mask.npy uint8 (when the
                                   manifest has masks), meta.json
        manifests/<manifest_key>/  index.csv of one manifest's cases: what `build_cache` returns

`spec_key` hashes `spec.to_dict()`, which records the preprocessing code's version too, so a
changed spec or resampler never reuses a stale cache. `case_key` hashes the case id, its image and
mask paths and the size and mtime_ns of every input file (each file of a DICOM series folder), so
data replaced in place is preprocessed again; the old entry stays until `prune=True`.

Each case records what it holds, so that a damaged case is never read silently. Its meta.json
holds its `key` (the folder's name: a case folder renamed or swapped with another no longer
matches) and, per array file, the size in bytes, the shape, the dtype, the sha256 of the whole
file (computed while writing it, at no extra read) and a sampled sha256: the hash of 4 KiB blocks
at recorded offsets, 16 spread evenly over the file (the header first) plus, for a mask, up to 16
on its foreground (masks are mostly zeros: two negative-looking stretches of two different masks
hash alike). Every time the cache is opened (`update_cache` and `load_cache`, so every `train`
and `preprocess`), each case is checked for its key, its files' sizes, the shape and dtype in
their .npy headers and the sampled hash; `check_case(..., full=True)` also reads every byte
against the sha256. A truncated, reshaped or swapped file fails these checks: `update_cache`
rebuilds the case from its source (one line on stderr naming the case and what was wrong; a
refusal naming it when the cache cannot be written) and `load_cache` refuses it, naming the case.

Why a sampled hash and not the full one on every open: on the flagship cache (64 cases of
48 x 288 x 288, 1.27 GB in 128 files) the full sha256 took 1.2-3.0 s (2-core EPYC, every file in
the page cache, idle to loaded) and the sampled checks 0.05 s. A dataset of 100 GB would spend
minutes reading the whole cache before every run, and push out of the page cache the data
training is about to read. What is not caught on open: a change inside a block no sample covers
that keeps the size and the header; `check_case(..., full=True)` catches it.

Opening a complete, intact cache writes nothing (the lock file is opened for reading when it
cannot be written), so a cache on a read-only disk or folder is used as it is.

Each case folder is written under a temporary name and renamed when complete (`atomic_dir`), so a
folder under its final name is always whole: a rerun after any interruption (Ctrl-C, SIGTERM,
kill -9) reuses every finished case and builds only the rest. Temporaries that a killed process
left (`cases/.<case_key>.tmp-<8 hex>`) are deleted by the next build, which holds the spec
folder's lock, so it never deletes the temporary of a build still running.

With `workers` > 1, cases are preprocessed in spawned processes, which import no TensorFlow.
Ctrl-C or SIGTERM in the parent lets the running cases finish and starts no more; a worker sent
SIGTERM itself deletes the temporary folder of its case and exits. Workers are sent SIGTERM when
the parent dies, even by SIGKILL (`kerasmed.worker_processes`), so none outlives it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.data.cache_integrity import case_files as _case_files
from kerasmed.data.cache_integrity import check_case
from kerasmed.data.cache_integrity import save_array as _save_array
from kerasmed.data.manifest import check_case_geometry
from kerasmed.worker_processes import die_with_parent
from serving.atomic import (
    atomic_dir,
    atomic_write_text,
    fsync_file,
    remove_stale_temporaries,
    temporary_sibling,
)
from serving.errors import REFUSALS, ConfigError, DataError, KerasmedError, StorageError
from serving.io import read_image
from serving.ownership import MARKER, read_marker, write_marker
from serving.preprocessing import PreprocessSpec, preprocess

CACHE = "preprocessed cache"  # the kind in the spec folder's `.kerasmed` marker
META_KEYS = ("case_id", "source_shape", "source_spacing", "output_shape", "positive_slices",
             "foreground_voxels")
INTEGRITY_KEYS = ("key", "files")  # a case built before they were recorded is built again
_WHERE = "the preprocessed cache (`data.cache_dir`, default <data.root>/cache) at"
_CASE_NAME = re.compile(r"[0-9a-f]{24}")
_INDEX_NAME = re.compile(r"[0-9a-f]{16}")
# What `atomic_dir` (`.tmp-`), `replace_dir` (`.old-`) and pruning (`.del-`) leave when killed.
_LEFTOVER = re.compile(r"\.(?:[0-9a-f]{24}|[0-9a-f]{16})\.(?:tmp|old|del)-[0-9a-f]{8}")


@dataclass(frozen=True)
class CachedCase:
    case_id: str
    split: str
    image: np.ndarray  # (Z, H, W) float32 HU, memory-mapped
    mask: np.ndarray | None  # (Z, H, W) uint8, memory-mapped; None for a case without a mask
    meta: dict = field(default_factory=dict)  # the case's meta.json (see `build_case`)


@dataclass(frozen=True)
class CacheReport:
    """What `update_cache` did.

    Attributes:
        index: the manifest's index folder, which `load_cache` takes.
        folder: the spec folder holding it.
        built: cases preprocessed by this call.
        reused: finished cases found in the cache.
        pruned: case and index folders deleted (`prune=True`).
    """

    index: Path
    folder: Path
    built: int
    reused: int
    pruned: int = 0


def _digest(payload, length: int) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def spec_key(spec: PreprocessSpec, read: dict | None = None) -> str:
    """The spec folder's name: a hash of `spec.to_dict()` (which holds the code's version) and of
    the reader options (`data.read`), when there are any."""
    return _digest({"spec": spec.to_dict(), "read": read} if read else spec.to_dict(), 16)


def file_identity(path: str | Path) -> list:
    """`[relative path, size, mtime_ns]` of `path`, or of every file under it for a folder.

    Files are listed in sorted order, so the result only changes when the data does.
    """
    path = Path(path)
    if not path.is_dir():
        st = path.stat()
        return [["", st.st_size, st.st_mtime_ns]]
    found = []
    for parent, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(parent, name))
            found.append([os.path.relpath(os.path.join(parent, name), path), st.st_size, st.st_mtime_ns])
    return found


def case_key(case_id: str, image_path: str | Path, mask_path: str | Path) -> str:
    """A case folder's name: a hash of what the case's arrays are computed from.

    The split is left out (moving a case to another split reuses its arrays); the input files
    enter by size and mtime_ns, so a file replaced in place gives a new key.
    """
    return _digest([str(case_id), str(image_path), str(mask_path),
                    file_identity(image_path), file_identity(mask_path) if mask_path else []], 24)


def manifest_key(manifest: pd.DataFrame) -> str:
    """An index folder's name: a hash of the manifest rows that the cache uses."""
    return _digest(_with_mask_column(manifest)[["case_id", "image_path", "mask_path", "split"]]
                   .values.tolist(), 16)


def _with_mask_column(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with `mask_path` "" (no mask) when it has no such column (e.g. labels)."""
    return manifest if "mask_path" in manifest else manifest.assign(mask_path="")


def build_case(case_id: str, image_path: str, mask_path: str, spec: PreprocessSpec,
               folder: str | Path, read: dict | None = None) -> dict:
    """Read, check and preprocess one case into `folder` (written atomically); returns its meta.

    The meta (also `folder/meta.json`) holds `case_id`, `source_shape` and `source_spacing` (mm)
    of the image as read, `output_shape` (Z, H, W) of the cached arrays, `positive_slices` (slices
    with any foreground), `foreground_voxels` (mask > 0 in the preprocessed mask) and `mask`
    (whether there is one: a case of a dataset without masks, `mask_path` "", has none and
    counts no foreground). A 2D image is cached as one slice (`Image.as_volume`). It also holds
    `key` (the folder's name) and `files`: per array file its `size`, `shape`, `dtype`, `sha256`
    and `sampled` hash (see the module docstring and `check_case`).

    Raises:
        KerasmedError: a reader, geometry or preprocessing error, naming the case.
        StorageError: a write the file system refused (no space left, read-only, ...), naming
            the case and its folder.
    """
    try:
        image = read_image(image_path, options=read).as_volume()
        # The model's channels are neighbouring slices, so an RGB image has no place here.
        image.require_grey(f"The slice cache (case {case_id}, `{image_path}`)")
        x, record = preprocess(image, spec)
        y = None
        if mask_path:
            mask = read_image(mask_path, options=read).as_volume()
            mask.require_grey(f"The slice cache (case {case_id}, `{mask_path}`)")
            check_case_geometry(image, mask, case_id, mask_path)
            # On the image's record: a foreground crop is the image's box, never the mask's own.
            y, _ = preprocess(mask, spec, order="nearest", record=record)
    except KerasmedError as err:
        if f"case {case_id}" in str(err):
            raise
        raise type(err)(f"Case {case_id}: {err}") from err
    meta = {
        "case_id": str(case_id),
        "source_shape": [int(n) for n in image.shape],
        "source_spacing": [float(s) for s in image.spacing],
        "output_shape": [int(n) for n in x.shape],
        "positive_slices": 0 if y is None else int(np.count_nonzero(y.reshape(y.shape[0], -1).any(1))),
        "foreground_voxels": 0 if y is None else int(np.count_nonzero(y > 0)),
        "mask": y is not None,
        "key": Path(folder).name,
        "files": {},
    }
    try:
        with atomic_dir(folder) as tmp:
            meta["files"]["image.npy"] = _save_array(tmp / "image.npy", x.astype(np.float32))
            if y is not None:
                meta["files"]["mask.npy"] = _save_array(tmp / "mask.npy", y.astype(np.uint8),
                                                        focus=np.flatnonzero(y))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            for name in _case_files(meta):  # on disk before the rename: a crash never publishes a hole
                fsync_file(tmp / name)
    except StorageError as err:  # e.g. no space left: name the case too
        raise StorageError(f"Case {case_id}: {err}") from err
    return meta


def _finished_meta(folder: Path) -> dict | None:
    """The meta of a complete case folder, or None (absent, emptied by hand, unreadable)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and set(META_KEYS + INTEGRITY_KEYS) <= meta.keys()):
        return None
    return meta if all((folder / name).is_file() for name in _case_files(meta)) else None


# --- worker processes ------------------------------------------------------------------------

_CURRENT: Path | None = None  # in a worker process: the case folder being written


def _worker_sigterm(signum, frame):
    # Exit at once: an exception raised here could land in some `__del__` and be swallowed. The
    # case's temporary folder goes first (only this process writes that case).
    if _CURRENT is not None:
        for tmp in _CURRENT.parent.glob(f".{_CURRENT.name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
    os._exit(128 + signum)


def _worker_init(parent_pid: int) -> None:
    signal.signal(signal.SIGTERM, _worker_sigterm)
    # A parent killed with SIGKILL runs no cleanup: SIGTERM this worker then (it deletes its
    # temporary and exits), and the resource tracker, whose pipe the workers held, exits too.
    die_with_parent(parent_pid, signal.SIGTERM)


def _worker_build_case(case_id, image_path, mask_path, spec, folder, read) -> dict:
    global _CURRENT
    _CURRENT = Path(folder)
    try:
        return build_case(case_id, image_path, mask_path, spec, folder, read)
    finally:
        _CURRENT = None


@contextlib.contextmanager
def _starting_workers() -> Iterator[None]:
    """Start worker processes inside the block, shielded from Ctrl-C and SIGTERM.

    Ctrl-C reaches the whole process group, but the parent alone decides (it lets running cases
    finish and starts no more): SIGINT is blocked in the processes started here for their whole
    life (a blocked signal stays blocked across fork and exec; Python never unblocks it). In this
    process a SIGINT or SIGTERM meanwhile is held, then delivered once the workers have started
    (a start cut short leaves a worker that dies with a traceback).
    """
    resource_tracker.ensure_running()  # it unblocks SIGINT as it starts: not in the block
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    held, handlers = [], {}
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        handlers = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s in held:
            signal.raise_signal(s)


def _build_all(todo: list[tuple], spec: PreprocessSpec, workers: int, bar,
               read: dict | None = None) -> dict[str, dict]:
    """Build `todo` (`(case_id, image_path, mask_path, folder)` tuples); returns metas by case id.

    On an error or an interruption no new case starts, the running ones finish (each is written
    atomically), and the first error is raised.
    """
    metas = {}
    if workers <= 1 or len(todo) <= 1:
        for case_id, image_path, mask_path, folder in todo:
            metas[case_id] = build_case(case_id, image_path, mask_path, spec, folder, read)
            bar.update()
        return metas
    # spawn: a fresh interpreter per worker, which imports neither TensorFlow nor the parent's
    # threads (train calls this after importing TensorFlow).
    pool = None
    try:
        with _starting_workers():  # the pool starts its workers in `submit`
            pool = ProcessPoolExecutor(min(workers, len(todo)),
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
            futures = {pool.submit(_worker_build_case, case_id, image_path, mask_path, spec, folder,
                                   read):
                       case_id for case_id, image_path, mask_path, folder in todo}
        for future in as_completed(futures):
            try:
                metas[futures[future]] = future.result()
            except KerasmedError:
                raise  # names the case already
            except Exception as err:
                err.add_note(f"while caching case {futures[future]}")
                raise
            bar.update()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return metas


# --- the cache -------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(folder: Path, progress: bool) -> Iterator[None]:
    """Hold `folder/.lock`: one build of a spec folder at a time (released by the OS on kill).

    In a cache this process may not write (a read-only file system or folder), the lock file is
    opened for reading (`flock` needs no write access), or, when it cannot be created, not held:
    this process then writes nothing there, and a complete cache is used as it is.
    """
    try:
        lock = open(folder / ".lock", "a")
    except OSError as err:
        if StorageError.from_os_error(err) is None:
            raise
        try:
            lock = open(folder / ".lock")
        except OSError:
            yield
            return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"cache: waiting for another process building {folder}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _discard(path: Path) -> None:
    """Delete a folder so that it vanishes from its name at once (a kill mid-delete leaves a
    hidden leftover, which the next build deletes, never a partial folder under its name)."""
    gone = path.with_name(f".{path.name}.del-{uuid.uuid4().hex[:8]}")
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    for sub in ("cases", "manifests"):
        for path in (folder / sub).glob(".*"):
            if _LEFTOVER.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)


def _prune(folder: Path, keep_cases: set[str], keep_index: str) -> int:
    pruned = 0
    for sub, name, keep in (("cases", _CASE_NAME, keep_cases), ("manifests", _INDEX_NAME, {keep_index})):
        for path in sorted((folder / sub).iterdir()):
            if path.is_dir() and name.fullmatch(path.name) and path.name not in keep:
                _discard(path)
                pruned += 1
    return pruned


def _spec_folder(cache_root: Path, spec: PreprocessSpec, prune: bool, read: dict | None) -> Path:
    """The spec folder, made if absent (a write the file system refuses names the cache folder)."""
    try:
        return _make_spec_folder(cache_root, spec, prune, read)
    except OSError as err:
        refused = StorageError.from_os_error(err, cache_root, doing=f"write {_WHERE}")
        if refused is None:
            raise
        raise refused from err


def _make_spec_folder(cache_root: Path, spec: PreprocessSpec, prune: bool, read: dict | None) -> Path:
    folder = cache_root / spec_key(spec, read)
    if cache_root.exists() and not cache_root.is_dir():
        raise StorageError(f"Cannot write {_WHERE} {cache_root}: not a folder (it is a file). "
                           f"Received: {cache_root} is a file")
    if not folder.is_dir():
        # Not `atomic_dir`, which replaces a folder that a concurrent build may have made meanwhile.
        tmp = temporary_sibling(folder)
        tmp.mkdir(parents=True)
        try:
            write_marker(tmp, CACHE, created_by="kerasmed preprocess")
            atomic_write_text(tmp / "spec.json", json.dumps(spec.to_dict(), indent=2) + "\n")
            if read:
                atomic_write_text(tmp / "read.json", json.dumps(read, indent=2) + "\n")
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    marker = read_marker(folder)
    if prune and (marker is None or marker.get("kind") != CACHE):
        raise ConfigError(
            f"`--prune` deletes only in cache folders that kerasmed made (with a {MARKER} marker "
            f"of kind {CACHE!r}). Received: {folder} with marker {marker}"
        )
    for sub in ("cases", "manifests"):
        (folder / sub).mkdir(exist_ok=True)
    return folder


def update_cache(manifest: pd.DataFrame, spec: PreprocessSpec, cache_root: str | Path,
                 progress: bool = True, workers: int = 1, prune: bool = False,
                 read: dict | None = None) -> CacheReport:
    """Preprocess the cases of `manifest` that the cache lacks, and write the manifest's index.

    Args:
        manifest: from `read_manifest` (absolute paths).
        spec: preprocessing spec.
        cache_root: parent folder of the spec folders.
        progress: show a progress bar over cases.
        workers: processes preprocessing cases at once (1: in this process).
        prune: delete the spec folder's case and index folders this manifest does not use.
        read: reader options (`data.read`, see `serving.io.check_read_options`); part of the spec
            folder's key, since they change what is read.

    Returns:
        What was built, reused and pruned, and the index folder for `load_cache`.

    Raises:
        DataError: if a case is unreadable or its mask is off the image grid (naming the case).
        ConfigError: if `workers` < 1, or `prune` and the spec folder has no kerasmed marker.
        StorageError: if the file system refuses a write the cache needs: no space left,
            read-only, permission denied, `cache_root` a file. A complete cache needs none:
            with every case intact and the index unchanged, nothing is written (a damaged case
            is rebuilt, see `check_case`).
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"`workers` must be an integer >= 1. Received: workers={workers!r}")
    folder = _spec_folder(Path(cache_root), spec, prune, read)
    rows = [(str(r.case_id), str(r.split), r.image_path, r.mask_path)
            for r in _with_mask_column(manifest).itertuples()]
    with _locked(folder, progress):
        _remove_leftovers(folder)  # only a killed build leaves these, and none runs but ours
        keys = {case_id: case_key(case_id, image, mask) for case_id, _, image, mask in rows}
        metas = {case_id: _intact_meta(folder / "cases" / keys[case_id], case_id)
                 for case_id, *_ in rows}
        todo = [(case_id, image, mask, folder / "cases" / keys[case_id])
                for case_id, _, image, mask in rows if metas[case_id] is None]
        with tqdm(total=len(rows), initial=len(rows) - len(todo), desc="cache", unit="case",
                  disable=not progress) as bar:
            metas.update(_build_all(todo, spec, workers, bar, read))
        index = pd.DataFrame([
            {"case_id": case_id, "split": split, "slices": metas[case_id]["output_shape"][0],
             "positive_slices": metas[case_id]["positive_slices"],
             "folder": f"cases/{keys[case_id]}"}
            for case_id, split, *_ in rows
        ]).to_csv(index=False)
        index_folder = folder / "manifests" / manifest_key(manifest)
        index_folder.mkdir(exist_ok=True)
        path = index_folder / "index.csv"
        remove_stale_temporaries(path)
        if not path.is_file() or path.read_text() != index:  # unchanged: keep its mtime
            atomic_write_text(path, index)
        pruned = _prune(folder, set(keys.values()), index_folder.name) if prune else 0
    return CacheReport(index_folder, folder, built=len(todo), reused=len(rows) - len(todo),
                       pruned=pruned)


def _intact_meta(folder: Path, case_id: str) -> dict | None:
    """The meta of a finished, intact case folder; None for one to build (absent, incomplete, or
    damaged: then one line on stderr says what was wrong).

    Raises:
        StorageError: if the case is damaged and its cache folder cannot be written (read-only),
            so that it cannot be rebuilt: naming the case and what is wrong.
    """
    meta = _finished_meta(folder)
    problem = None if meta is None else check_case(folder, meta)
    if problem is None:
        return meta
    cases = folder.parent
    if not os.access(cases, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(cases).f_flag & os.ST_RDONLY else errno.EACCES
        raise StorageError(f"Cached case {case_id} is damaged ({problem}) and cannot be rebuilt "
                           f"in {cases}: {REFUSALS[code]}. Received: {folder}")
    print(f"cache: case {case_id} is damaged ({problem}; {folder}); rebuilding it from its source",
          file=sys.stderr)
    return None


def build_cache(
    manifest: pd.DataFrame, spec: PreprocessSpec, cache_root: str | Path, progress: bool = True,
    workers: int = 1, read: dict | None = None,
) -> Path:
    """Preprocess the cases of `manifest` into the cache unless already there (see `update_cache`).

    Returns:
        The manifest's index folder (holding `index.csv`), for `load_cache`.
    """
    return update_cache(manifest, spec, cache_root, progress=progress, workers=workers,
                        read=read).index


def load_cache(folder: str | Path, split: str | None = None) -> list[CachedCase]:
    """Memory-map the cached cases of an index folder from `build_cache` (optionally of one split).

    Each case is checked first (`check_case`: key, sizes, .npy headers, sampled sha256); this
    writes nothing, so a complete cache on a read-only file system is read as it is.

    Raises:
        DataError: if the index or a case folder it lists is missing (e.g. pruned since), or a
            case is damaged (naming the case and what differs from its record).
    """
    folder = Path(folder)
    try:
        index = pd.read_csv(folder / "index.csv", dtype={"case_id": str, "folder": str})
    except FileNotFoundError as err:
        raise DataError(f"The cache index must exist; run `kerasmed preprocess CONFIG`. "
                        f"Received: {folder / 'index.csv'} not found") from err
    if split is not None:
        index = index[index["split"] == split]
    spec_folder = folder.parent.parent
    cases = []
    for r in index.itertuples():
        case = spec_folder / r.folder
        meta = _finished_meta(case)
        if meta is None:
            raise DataError(f"Cached case {r.case_id} must be complete; run `kerasmed preprocess "
                            f"CONFIG` again. Received: {case} missing or incomplete")
        problem = check_case(case, meta)
        if problem is not None:
            raise DataError(f"Cached case {r.case_id} must match what was recorded when it was "
                            f"built; run `kerasmed preprocess CONFIG` to rebuild it from its "
                            f"source. Received: {problem} in {case}")
        cases.append(CachedCase(
            case_id=r.case_id, split=r.split, meta=meta,
            image=np.load(case / "image.npy", mmap_mode="r"),
            mask=np.load(case / "mask.npy", mmap_mode="r") if meta.get("mask", True) else None,
        ))
    return cases
