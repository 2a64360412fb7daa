"""What the file writers of `serving.io` share: a file appears complete or not at all
(`atomic_file`, the single-file counterpart of `serving.atomic.atomic_dir`), and masks are label
maps of whole numbers (`label_map`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from serving.errors import DataError
from serving.image import Image


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path of `target` (same suffix) that replaces it on success.

    On any error the temporary file is deleted and `target` is left as it was.

    Example:
        >>> with atomic_file("findings.csv") as tmp:
        ...     tmp.write_text("id\\n")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def label_map(mask: Image, what: str) -> np.ndarray:
    """The voxels of a grey mask as an int64 label map (0 background, 1..K classes).

    Args:
        mask: a grey `Image` holding bool or whole numbers >= 0.
        what: the step, for messages, e.g. "Writing a DICOM SEG".

    Raises:
        DataError: if the mask has channels, or holds anything but whole numbers >= 0.
    """
    mask.require_grey(what)
    array = np.asarray(mask.array)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} needs `mask` to hold numbers (a label map). Received: dtype={array.dtype}")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.rint(array)).all()):
        raise DataError(
            f"{what} needs `mask` to be a label map of whole numbers (threshold probabilities "
            f"first). Received: dtype={array.dtype} with fractional or non-finite values"
        )
    if array.size and array.min() < 0:
        raise DataError(
            f"{what} needs `mask` labels >= 0 (0 = background). Received: min={array.min()}"
        )
    return array.astype(np.int64)
