"""Write outputs so that a partial result never looks complete: build under a temporary name,
then rename into place. Every file and folder kerasmed writes goes through these helpers.

- `atomic_write_bytes(path, data)` / `atomic_write_text(path, text)`: one file from bytes or text;
- `atomic_file(path)`: a temporary sibling path for libraries that write a file themselves
  (`Model.save`, `Figure.savefig`, `nibabel.save`, `np.save`), renamed into place after the block;
- `atomic_dir(path)`: a temporary sibling folder that replaces `path` as a whole.

Temporary names are hidden siblings (`.<name>.tmp-<random><suffixes>`) in the target's folder, so
the final rename never crosses file systems, and they keep every suffix of the target
(`.weights.h5`, `.nii.gz`), which some writers read to choose a format. A file is flushed to disk
(`fsync`) before the rename, so a crash never publishes a hole. On any error, the temporary is
deleted and the target is left as it was; a write the file system refuses (no space left, a
file-size limit, read-only, permission denied, a file where a folder must be) is raised as a
`StorageError` naming the target, not its temporary.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from serving.errors import StorageError


def temporary_sibling(target: str | os.PathLike, kind: str = "tmp") -> Path:
    """A fresh hidden name beside `target` that keeps all of its suffixes, e.g.
    `best.weights.h5` -> `.best.tmp-1a2b3c4d.weights.h5`."""
    target = Path(target)
    head, dot, tail = target.name.lstrip(".").partition(".")
    return target.with_name(f".{head}.{kind}-{uuid.uuid4().hex[:8]}{dot}{tail}")


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_file(target)` left behind when a process was killed
    mid-write (`kill -9` skips every cleanup); returns what was deleted. Call it only where no
    other process writes `target` at the same time."""
    target = Path(target)
    head, dot, tail = target.name.lstrip(".").partition(".")
    found = sorted(target.parent.glob(f".{head}.tmp-{'[0-9a-f]' * 8}{dot}{tail}"))
    for path in found:
        path.unlink(missing_ok=True)
    return found


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to disk, so a rename that follows never publishes a hole."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path of `target` (same suffixes) that replaces it on success.

    The block writes the file at the yielded path. If it wrote nothing there (e.g. a checkpoint
    callback that found no improvement), `target` is left as it was. Missing parent folders are
    created. On any error the temporary file is deleted and `target` is left as it was.

    Args:
        target: the file to write.
        fsync: flush the file to disk before the rename.

    Example:
        >>> with atomic_file("run/model.keras") as tmp:
        ...     model.save(tmp)
    """
    target = Path(target)
    tmp = temporary_sibling(target)
    try:
        with _refusals_named(target):
            _make_parent(target)
            yield tmp
            if tmp.exists():
                if fsync:
                    fsync_file(tmp)
                os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write `data` to `target` atomically (see `atomic_file`); returns `target` as a Path."""
    with atomic_file(target, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(
    target: str | os.PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> Path:
    """Write `text` to `target` atomically, encoded as given and with line endings as they are
    in `text` (no newline translation); returns `target` as a Path."""
    return atomic_write_bytes(target, text.encode(encoding), fsync=fsync)


def replace_dir(new: Path, target: Path) -> None:
    """Move the complete folder `new` to `target`.

    An existing `target` is moved aside only at the last moment, and put back if the final move
    fails, so at every instant `target` is either the old complete folder or the new one.
    """
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `target` that replaces it on success.

    On any error the temporary folder is deleted and `target` is left as it was.

    Example:
        >>> with atomic_dir("bundle") as tmp:
        ...     (tmp / "manifest.json").write_text("{}")
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    with _refusals_named(target):
        _make_parent(target)
        tmp.mkdir()
        try:
            yield tmp
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file where the folder must be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target.parent)) from err


@contextlib.contextmanager
def _refusals_named(target: Path) -> Iterator[None]:
    """Raise a write the file system refuses in the block as a `StorageError` naming `target`
    (or the file the error names, with temporary names shown as their targets)."""
    try:
        yield
    except OSError as err:
        refused = StorageError.from_os_error(err, target)
        if refused is None:
            raise
        raise refused from err
