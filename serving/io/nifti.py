"""Read and write NIfTI-1 files (`.nii`, `.nii.gz`) as `Image`s.

NIfTI indexes voxels `(i, j, k)` with `i` fastest in memory (x first) and maps them to RAS
millimetres; an `Image` is `(z, y, x)` in LPS. So the array is transposed (axes reversed), the
affine's columns are reversed to follow, and its first two rows are negated (LPS <-> RAS). A mask
written here from an Image read from DICOM therefore overlays that DICOM in 3D Slicer or ITK.

Both the sform and the qform are written (code 1, scanner) so that readers preferring either one
agree. The modality is kept in the header's `descrip` field as `kerasmed modality=CT`.

nibabel is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from serving.atomic import atomic_file
from serving.errors import DataError
from serving.image import Image
from serving.lazy_import import lazy_import

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_DESCRIP_PREFIX = "kerasmed modality="
# NIfTI has no bool or 64-bit-int-friendly readers everywhere; store these as the nearest safe type.
_CAST = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}
# Deflate cannot expand data more than 1032-fold (a 258-byte match costs at least 2 bits; zlib
# reaches 1030 on zeros), so a .nii.gz cannot hold more voxel bytes than 1032 times its own size.
# A damaged header declaring more is refused before nibabel allocates the array (it allocates
# first and finds the data missing after: gigabytes and seconds for a 68 KB file).
_MAX_DEFLATE_RATIO = 1032


def _nibabel():
    return lazy_import("nibabel", purpose="read and write NIfTI files")


def _image_to_ras_affine(image: Image) -> np.ndarray:
    """4x4 affine from NIfTI `(i, j, k)` = array `(x, y, z)` indices to RAS mm."""
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ (image.direction * np.asarray(image.spacing)[None, :])[:, ::-1]
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.origin)
    return affine


def _safe_dtype(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype in _CAST:
        return array.astype(_CAST[array.dtype])
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        # 64-bit ints are not portable in NIfTI; narrow them when the values allow it.
        target = np.int32 if array.dtype.kind == "i" else np.uint32
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise DataError(
                f"Integer images written to NIfTI must fit in 32 bits; `{path}` would overflow. "
                f"Received: dtype={array.dtype}, range=[{array.min()}, {array.max()}]"
            )
        return array.astype(target)
    if array.dtype.kind not in "iuf":
        raise DataError(
            f"NIfTI images must hold numbers (int, uint, float or bool) for `{path}`. "
            f"Received: dtype={array.dtype}"
        )
    return array


def write_nifti(image: Image, path: str | os.PathLike) -> Path:
    """Write a 3D `Image` to a NIfTI-1 file, keeping its dtype and LPS geometry.

    The file is written under a temporary name in the same folder and renamed into place, so a
    reader never sees a half-written file.

    Args:
        image: 3D grey `Image`, array `(z, y, x)`; bool is stored as uint8, 64-bit ints as
            32-bit.
        path: destination ending in `.nii` or `.nii.gz` (gzip-compressed).

    Returns:
        The written path.

    Raises:
        DataError: if the image is not 3D or not grey (`channels > 1`, e.g. RGB), `path` has
            another suffix, or the dtype cannot be stored.
    """
    nib = _nibabel()
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise DataError(f"`path` must end in .nii or .nii.gz. Received: path={str(path)!r}")
    image.require_grey(f"Writing NIfTI `{path}`")
    if image.ndim != 3:
        raise DataError(
            f"`image` must be 3D (z, y, x) to be written as NIfTI. Received: shape={image.shape}"
        )
    data = _safe_dtype(np.asarray(image.array), path).transpose(2, 1, 0)
    affine = _image_to_ras_affine(image)
    nifti = nib.Nifti1Image(data, affine)
    header = nifti.header
    header.set_data_dtype(data.dtype)
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = f"{_DESCRIP_PREFIX}{image.modality}"[:79].encode()
    # nibabel picks gzip from the suffix, which the temporary name keeps.
    with atomic_file(path) as tmp:
        nib.save(nifti, tmp)
    return path


def _unreadable(path: Path, err: Exception) -> DataError:
    """The error for a file nibabel cannot read, on one line (nibabel's messages span several)."""
    received = " ".join(f"{type(err).__name__}: {err}".split())
    return DataError(
        f"`{path}` must be a complete NIfTI file (header and voxel data); it could not be read. "
        f"Received: {received}"
    )


def _check_declared_size(proxy, path: Path) -> None:
    """Refuse a header that declares more voxel bytes than the file can hold (see
    `_MAX_DEFLATE_RATIO`), before they are allocated."""
    try:
        shape = tuple(int(n) for n in proxy.shape)
        needed = int(proxy.offset) + math.prod(shape) * np.dtype(proxy.dtype).itemsize
    except (AttributeError, TypeError, ValueError, OverflowError):  # not an ArrayProxy: nibabel checks
        return
    size = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    capacity = size * _MAX_DEFLATE_RATIO if compressed else size
    if needed > capacity:
        held = f"a {size}-byte file"
        if compressed:
            held += f" (gzip: at most {capacity} bytes once decompressed)"
        raise DataError(
            f"`{path}` must be a complete NIfTI file holding the voxel data its header declares "
            f"(shape {shape}, {np.dtype(proxy.dtype)}: {needed} bytes with the header); it is "
            f"truncated or its header is corrupt. Received: {held}"
        )


def read_nifti(
    path: str | os.PathLike, canonical: bool = False, volume: int | None = None
) -> Image:
    """Read a NIfTI-1/2 file into an `Image` in array order `(z, y, x)` and LPS geometry.

    The stored dtype is kept (uint8 masks stay uint8) unless the header asks for intensity
    scaling, in which case the scaled values are returned as float.

    Args:
        path: a `.nii` or `.nii.gz` file.
        canonical: reorder and flip the axes to the closest axial order (`Image.reoriented`:
            z along +S, rows along +P, columns along +L), whatever order the file stores; no
            voxel is resampled. Off by default: the file's own voxel order.
        volume: for a 4D file holding several volumes (time points, diffusion directions,
            phases), the 0-based index of the one to read; required then, refused otherwise.

    Returns:
        An `Image` of shape `(k, j, i)` with spacing, origin and direction converted from the
        file's best affine (sform, else qform); modality from a kerasmed `descrip`, else "OT".

    Raises:
        DataError: if the file is missing, not NIfTI, truncated (its header declares more voxel
            data than it holds), empty, not 2D/3D (or 4D with `volume`), or its affine is not
            finite or degenerate; or `volume` is missing for a 4D file, out of range, or given
            for a 3D one.

    Example:
        >>> mask = read_nifti("case_000/nodules.nii.gz")      # uint8 (z, y, x)
    """
    nib = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`path` must be an existing NIfTI file. Received: path={str(path)!r}")
    # A damaged header (dims, scaling, affine) overflows in numpy; what comes out is checked below
    # and in `read_image`, so numpy's floating-point warnings would only add noise.
    try:
        with np.errstate(all="ignore"):
            nifti = nib.load(path)  # the header only: voxel data is read below
            descrip = nifti.header.get("descrip")
    except Exception as err:  # nibabel, gzip and numpy raise many types for a damaged file
        raise _unreadable(path, err) from err
    _check_declared_size(nifti.dataobj, path)
    proxy = nifti.dataobj
    volumes = proxy.shape[3] if len(proxy.shape) == 4 else None
    if volume is not None and (volumes is None or not 0 <= volume < volumes):
        raise DataError(
            f"`volume` must index one of the volumes of a 4D NIfTI file `{path}` (0 to "
            f"{volumes - 1 if volumes else 'none'}). Received: volume={volume!r}, "
            f"file shape={tuple(proxy.shape)}"
        )
    if volume is None and volumes is not None and volumes > 1:
        raise DataError(
            f"`{path}` holds {volumes} volumes (4D, shape {tuple(proxy.shape)}): pass `volume=` "
            f"(0 to {volumes - 1}) to read one. Received: volume=None"
        )
    try:
        with np.errstate(all="ignore"):
            # Slicing the proxy reads that volume only, not the whole 4D file.
            data = np.asanyarray(proxy[..., volume if volume is not None else 0]
                                 if volumes is not None else proxy)
            affine = np.asarray(nifti.affine, float)
    except Exception as err:
        raise _unreadable(path, err) from err
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.size == 0:
        raise DataError(
            f"`{path}` must hold a 2D or 3D image with at least one voxel. "
            f"Received: shape={data.shape}"
        )
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(
            f"`{path}` must have a finite 4x4 affine (sform or qform). "
            f"Received: affine={affine.tolist()}"
        )
    linear = affine[:3, :3]
    spacing_ijk = np.linalg.norm(linear, axis=0)
    if np.any(spacing_ijk <= 0):
        raise DataError(
            f"`{path}` must have a non-degenerate affine. Received: affine={affine.tolist()}"
        )
    direction_ijk = _LPS_TO_RAS @ (linear / spacing_ijk[None, :])
    modality = "OT"
    text = (
        bytes(np.asarray(descrip).item()).decode("ascii", "ignore") if descrip is not None else ""
    )
    if text.startswith(_DESCRIP_PREFIX):
        modality = text[len(_DESCRIP_PREFIX) :].strip() or "OT"
    image = Image(
        array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=tuple(spacing_ijk[::-1]),
        origin=tuple(_LPS_TO_RAS @ affine[:3, 3]),
        direction=direction_ijk[:, ::-1],
        modality=modality,
    )
    return image.reoriented() if canonical else image
