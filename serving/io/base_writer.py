"""What the file writers of `serving.io` share: a file appears complete or not at all
(`atomic_file`, re-exported from `serving.atomic`, the one helper for every file and folder
output), and masks are label maps of whole numbers (`label_map`).
"""

from __future__ import annotations

import numpy as np

from serving.atomic import atomic_file  # noqa: F401 - the writers import it from here
from serving.errors import DataError
from serving.image import Image


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
