"""Name -> image reader, and `read_image`, which picks the reader from the path.

`read_image` is the validated entry point: it refuses an image whose voxels are not finite real
numbers, for every format at once. The reader functions themselves return what the file holds.

Adding a format means one reader function and one line in `READERS` (plus its suffixes in
`SUFFIXES`). Readers import their third-party library on first call, so this module is cheap.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serving.array_checks import finite_real_array
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.dicom import read_dicom_file, read_dicom_series
from serving.io.nifti import read_nifti
from serving.io.npy import read_npy, read_npz
from serving.io.raster import read_raster
from serving.io.tiff import read_tiff
from serving.registry import Registry

READERS = Registry("image format", {
    "dicom": read_dicom_series,
    "dicom-file": read_dicom_file,
    "nifti": read_nifti,
    "npy": read_npy,
    "npz": read_npz,
    "png": read_raster,
    "jpeg": read_raster,
    "tiff": read_tiff,
})
# File-name endings per reader; a directory always means "dicom".
SUFFIXES: dict[str, tuple[str, ...]] = {
    "dicom": (),
    "dicom-file": (".dcm", ".dicom"),  # and any file with the DICM marker (`format_of`)
    "nifti": (".nii", ".nii.gz"),
    "npy": (".npy",),
    "npz": (".npz",),
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "tiff": (".tif", ".tiff"),
}


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
    try:  # DICOM files often have no suffix: 'DICM' after the 128-byte preamble
        with open(path, "rb") as f:
            if f.read(132)[128:] == b"DICM":
                return "dicom-file"
    except OSError:  # missing or unreadable: reported below
        pass
    valid = ["<folder> (dicom)"] + [f"{s} ({fmt})" for fmt, ss in SUFFIXES.items() for s in ss]
    if not path.exists():
        raise DataError(
            f"`path` must be an existing DICOM folder or image file. Received: path={str(path)!r}"
        )
    raise DataError(
        f"Unknown image format for `{path}`; valid formats: {', '.join(valid)}. "
        f"Received: suffix={''.join(path.suffixes) or '(none)'!r}"
    )


def check_read_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """Validate per-reader options: `{reader name: {argument: value}}`.

    For example `{"dicom": {"pick": "most_slices"}, "nifti": {"canonical": True}}`: what a
    dataset's config (`data.read`) gives every `read_image` of its files, each reader taking only
    its own entry.

    Returns:
        The options as plain dicts.

    Raises:
        ConfigError: if a key is not a reader name or an argument is not one of that reader's
            keyword arguments (both listing the valid ones).
    """
    checked = {}
    for name, args in (options or {}).items():
        READERS.lookup(name)  # reader options are keyed by reader name
        if not isinstance(args, Mapping):
            raise ConfigError(
                f"The options of reader {name!r} must be a mapping of its arguments. "
                f"Received: {args!r}"
            )
        valid = list(inspect.signature(READERS[name]).parameters)[1:]  # all but the path
        unknown = sorted(set(args) - set(valid))
        if unknown:
            raise ConfigError(
                f"Unknown option of reader {name!r}; valid options: {valid}. Received: {unknown}"
            )
        checked[name] = dict(args)
    return checked


def read_image(
    path: str | os.PathLike,
    format: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs,
) -> Image:
    """Read any supported image: a DICOM series folder, NIfTI, `.npy`/`.npz`, PNG, JPEG or TIFF.

    Args:
        path: a folder (DICOM series) or a file whose ending names its format.
        format: force a reader by name (one of `READERS`) instead of guessing from `path`.
        options: per-reader options (see `check_read_options`); the entry of the reader chosen
            for `path` applies, under `kwargs`.
        **kwargs: passed to the reader, e.g. `series_uid` for DICOM, `spacing` for `.npy`, PNG,
            JPEG and TIFF (whose spacing is otherwise taken from a sidecar JSON or the file, else
            assumed; see `serving.io.sidecar`).

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
    image = READERS.lookup(format)(path, **{**(options or {}).get(format, {}), **kwargs})
    # Checked here, once for every reader, so that a NaN voxel fails at read time (the training
    # cache, evaluation, export) naming its file, instead of training or predicting NaN.
    finite_real_array(image.array, f"Image `{path}`")
    return image
