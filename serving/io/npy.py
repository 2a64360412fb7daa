"""Read numpy `.npy` and `.npz` arrays as `Image`s, with their geometry from a sidecar or argument.

A bare array has no voxel size. Spacing, origin and direction come from the reader's arguments,
else a sidecar JSON (`scan.npy.json` or `scan.json`, e.g. `{"spacing": [2.5, 0.7, 0.7]}`), else,
for `.npz`, arrays named `spacing`/`origin`/`direction` stored beside the image (see
`serving.io.sidecar`). Without any of them the spacing is 1.0 per axis and *assumed*
(`metadata["spacing_source"] == "assumed"`): reading works, but
`serving.preprocessing.preprocess` refuses to resample the image to a target spacing, naming the
sidecar and the `spacing` argument, rather than take 1.0 for millimetres.

An array is grey, `(y, x)` or `(z, y, x)`, unless `channels=C` says its last axis holds C
channels, `(y, x, C)` or `(z, y, x, C)`: a `(H, W, 3)` array is a 3-slice volume unless told so.
Pickled (object) arrays are never loaded.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from serving.errors import DataError
from serving.image import Image
from serving.io.sidecar import resolve_geometry

_GEOMETRY_KEYS = ("spacing", "origin", "direction")


def _to_image(path: Path, array: np.ndarray, channels: int, geometry: dict, recorded=None) -> Image:
    spatial = array.ndim - (channels > 1)
    if array.dtype.kind not in "biuf" or spatial not in (2, 3) or (
        channels > 1 and array.shape[-1] != channels
    ):
        expected = (
            "a 2D (y, x) or 3D (z, y, x)"
            if channels <= 1
            else f"a (y, x, {channels}) or (z, y, x, {channels})"
        )
        raise DataError(
            f"`{path}` must hold {expected} numeric array. "
            f"Received: shape={array.shape}, dtype={array.dtype}"
        )
    kwargs = resolve_geometry(path, spatial, recorded=recorded, **geometry)
    return Image(array=array, channels=channels, **kwargs)


def read_npy(
    path: str | os.PathLike, spacing=None, origin=None, direction=None, channels: int = 1
) -> Image:
    """Read a `.npy` array as an `Image`.

    Args:
        path: a `.npy` file holding a 2D `(y, x)` or 3D `(z, y, x)` numeric array (plus a last
            axis of `channels` values when `channels > 1`).
        spacing: mm per spatial axis; else from the sidecar JSON; else 1.0, recorded as assumed.
        origin: LPS mm of the first voxel; else from the sidecar; else 0.
        direction: `(ndim, ndim)` direction cosines; else from the sidecar; else axial.
        channels: 1 for a grey array, else the length of its last (channel) axis.

    Returns:
        An `Image`, modality "OT" unless the sidecar names one. `metadata["spacing_source"]` says
        where the spacing came from ("argument", "sidecar" or "assumed").

    Raises:
        DataError: if the file is missing, not a readable npy array (pickles are refused), not a
            2D/3D numeric array of that many channels, or its sidecar is invalid.

    Example:
        >>> ct = read_npy("ct.npy", spacing=(2.5, 0.7, 0.7))
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
    geometry = {"spacing": spacing, "origin": origin, "direction": direction}
    return _to_image(path, array, channels, geometry)


def read_npz(
    path: str | os.PathLike,
    key: str | None = None,
    spacing=None,
    origin=None,
    direction=None,
    channels: int = 1,
) -> Image:
    """Read one array of a `.npz` archive as an `Image`.

    Args:
        path: a `.npz` file (`np.savez` or `np.savez_compressed`).
        key: the array to read; by default the one named `image`, else the only array other
            than `spacing`, `origin` and `direction`.
        spacing: mm per spatial axis; else from the sidecar JSON; else the archive's `spacing`
            array; else 1.0, recorded as assumed.
        origin: as `spacing`, from the argument, the sidecar or the archive's `origin`.
        direction: as `spacing`, from the argument, the sidecar or the archive's `direction`.
        channels: 1 for a grey array, else the length of its last (channel) axis.

    Returns:
        An `Image`; `metadata["spacing_source"]` is "argument", "sidecar", "file" or "assumed".

    Raises:
        DataError: if the file is missing or not a complete npz archive, `key` is absent or
            ambiguous (the message lists the arrays), an array is pickled, or the image is not a
            2D/3D numeric array of that many channels.

    Example:
        >>> np.savez("case.npz", image=ct, spacing=[2.5, 0.7, 0.7])
        >>> read_npz("case.npz").spacing                      # (2.5, 0.7, 0.7)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`path` must be an existing .npz file. Received: path={str(path)!r}")
    try:
        # Opened here so that it is closed even when numpy cannot read the archive.
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not hasattr(archive, "files"):
                raise DataError(
                    f"`{path}` must be a .npz archive; read a single array as .npy. "
                    f"Received: one .npy array, shape={archive.shape}"
                )
            names = list(archive.files)
            candidates = [n for n in names if n not in _GEOMETRY_KEYS]
            if key is None and "image" in names:
                key = "image"
            elif key is None and len(candidates) == 1:
                key = candidates[0]
            if key not in names:
                raise DataError(
                    f"`{path}` must hold the array `key` names, or one named `image`, or exactly one "
                    f"array besides {list(_GEOMETRY_KEYS)}. Received: key={key!r}, arrays={names}"
                )
            array = archive[key]
            recorded = {k: archive[k].tolist() for k in _GEOMETRY_KEYS if k in names and k != key}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(
            f"`{path}` must be a complete .npz archive of numeric arrays (object arrays are "
            f"refused). Received: {type(err).__name__}: {err}"
        ) from err
    geometry = {"spacing": spacing, "origin": origin, "direction": direction}
    return _to_image(path, array, channels, geometry, recorded)
