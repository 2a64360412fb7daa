"""Name -> image reader, and `read_image`, which picks the reader from the path.

`read_image` is the validated entry point: it refuses an image whose voxels are not finite real
numbers, for every format at once. The reader functions themselves return what the file holds.

Adding a format means one reader function and one line in `READERS` (plus its suffixes in
`SUFFIXES`). Readers import their third-party library on first call, so this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving.array_checks import finite_real_array
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.dicom import read_dicom_series
from serving.io.nifti import read_nifti


def read_npy(path: str | os.PathLike) -> Image:
    """Read a plain `.npy` array as an `Image` with unit spacing and the default geometry.

    Args:
        path: a `.npy` file holding a 2D `(y, x)` or 3D `(z, y, x)` numeric array.

    Returns:
        An `Image` with spacing 1 mm per axis, origin 0 and axial direction; modality "OT".

    Raises:
        DataError: if the file is missing, not a readable npy array (pickles are refused), or
            not a 2D/3D numeric array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`path` must be an existing .npy file. Received: path={str(path)!r}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(
            f"`{path}` must be a complete .npy array file (object arrays are refused). "
            f"Received: {type(err).__name__}: {err}"
        ) from err
    if array.dtype.kind not in "biuf" or array.ndim not in (2, 3):
        raise DataError(
            f"`{path}` must hold a 2D (y, x) or 3D (z, y, x) numeric array. "
            f"Received: shape={array.shape}, dtype={array.dtype}"
        )
    return Image(array=array, spacing=(1.0,) * array.ndim)


READERS: dict[str, Callable[..., Image]] = {
    "dicom": read_dicom_series,
    "nifti": read_nifti,
    "npy": read_npy,
}
# File-name endings per reader; a directory always means "dicom".
SUFFIXES: dict[str, tuple[str, ...]] = {
    "dicom": (),
    "nifti": (".nii", ".nii.gz"),
    "npy": (".npy",),
}


def reader_names() -> list[str]:
    return sorted(READERS)


def format_of(path: str | os.PathLike) -> str:
    """The reader name for `path`: "dicom" for a folder, else chosen by the file-name ending.

    Raises:
        DataError: if the path does not exist or its ending matches no reader.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for fmt, suffixes in SUFFIXES.items():
        if any(name.endswith(suffix) for suffix in suffixes):
            return fmt
    valid = ["<folder> (dicom)"] + [f"{s} ({fmt})" for fmt, ss in SUFFIXES.items() for s in ss]
    if not path.exists():
        raise DataError(
            f"`path` must be an existing DICOM folder or image file. Received: path={str(path)!r}"
        )
    raise DataError(
        f"Unknown image format for `{path}`; valid formats: {', '.join(valid)}. "
        f"Received: suffix={''.join(path.suffixes) or '(none)'!r}"
    )


def read_image(path: str | os.PathLike, format: str | None = None, **kwargs) -> Image:
    """Read any supported image: a DICOM series folder, a NIfTI file or a `.npy` array.

    Args:
        path: a folder (DICOM series) or a file whose ending names its format.
        format: force a reader by name (one of `READERS`) instead of guessing from `path`.
        **kwargs: passed to the reader, e.g. `series_uid` for DICOM.

    Returns:
        The `Image` the reader returns.

    Raises:
        DataError: if the format cannot be determined, the file cannot be read, or its voxels
            are not real numbers or hold NaN or +-inf (the message names the file and counts
            them).
        ConfigError: if `format` names no reader.
    """
    if format is None:
        format = format_of(path)
    if format not in READERS:
        raise ConfigError(
            f"Unknown image format; valid formats: {reader_names()}. Received: format={format!r}"
        )
    image = READERS[format](path, **kwargs)
    # Checked here, once for every reader, so that a NaN voxel fails at read time (the training
    # cache, evaluation, export) naming its file, instead of training or predicting NaN.
    finite_real_array(image.array, f"Image `{path}`")
    return image
