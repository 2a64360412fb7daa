"""Write outputs so that a partial result never looks complete: build under a temporary name,
then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
