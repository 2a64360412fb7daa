"""Integrity of a cached case's files: each `.npy` is hashed while it is written (size, shape,
dtype, a full sha256 and a sampled sha256) and checked against that record when the cache is
opened (`check_case`). The reasoning for sampling on every open and hashing in full on build is in
`kerasmed.data.cache`'s docstring."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CASE_FILES = ("image.npy", "mask.npy", "meta.json")  # mask.npy only for a case with a mask
SAMPLE_BLOCK = 4096  # bytes per sampled block
SAMPLE_BLOCKS = 16  # blocks spread evenly over a file (and at most as many on a mask's foreground)


class _HashingWriter:
    """A file's `write` that also hashes and counts what it writes (numpy then writes an array in
    chunks through it, instead of `ndarray.tofile`, whose short write on a full disk is an
    `OSError` with no errno)."""

    def __init__(self, file):
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


def save_array(path: Path, array: np.ndarray, focus: np.ndarray | None = None) -> dict:
    """Write `array` to the .npy file `path`; returns its record (see the module docstring).

    Args:
        path: the file to write.
        array: the array.
        focus: flat indices of elements the sampled hash must cover (a mask's foreground).
    """
    with open(path, "wb") as f:
        writer = _HashingWriter(f)
        np.lib.format.write_array(writer, array, allow_pickle=False)
    header = writer.size - array.nbytes
    offsets = _even_offsets(writer.size)
    if focus is not None and focus.size:
        picked = focus[np.linspace(0, focus.size - 1, min(SAMPLE_BLOCKS, focus.size)).astype(int)]
        offsets = sorted(set(offsets) | {min(header + int(i) * array.itemsize,
                                             max(writer.size - SAMPLE_BLOCK, 0)) for i in picked})
    return {"size": writer.size, "shape": [int(n) for n in array.shape], "dtype": array.dtype.str,
            "sha256": writer.sha256.hexdigest(), "sampled": {"offsets": offsets,
                                                              "sha256": _sampled_sha256(path, offsets)}}


def _even_offsets(size: int) -> list[int]:
    """`SAMPLE_BLOCKS` block offsets spread evenly from the start to the end of a file of `size`
    bytes (fewer for a file of fewer blocks: together they still cover all of it)."""
    last, blocks = max(size - SAMPLE_BLOCK, 0), min(SAMPLE_BLOCKS, -(-size // SAMPLE_BLOCK))
    return sorted({last * i // max(blocks - 1, 1) for i in range(blocks)})


def _sampled_sha256(path: Path, offsets: list[int]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            digest.update(f.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def _file_problem(path: Path, record: dict, full: bool) -> str | None:
    """What is wrong with the cached array file `path` against its `record`, or None."""
    name = path.name
    try:
        size = path.stat().st_size
        if size != record["size"]:
            return f"{name} is {size} bytes, recorded {record['size']}"
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
        if (list(shape), dtype.str, fortran) != (record["shape"], record["dtype"], False):
            return (f"{name} holds a {tuple(shape)} {dtype} array, recorded "
                    f"{tuple(record['shape'])} {np.dtype(record['dtype'])}")
        if _sampled_sha256(path, record["sampled"]["offsets"]) != record["sampled"]["sha256"]:
            return f"{name} differs from its recorded content (sampled sha256)"
        if full:
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != record["sha256"]:
                    return f"{name} differs from its recorded content (sha256)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{name} is unreadable ({type(err).__name__}: {err})"
    return None


def check_case(folder: str | Path, meta: dict, full: bool = False) -> str | None:
    """What is wrong with the finished case folder `folder` whose meta.json holds `meta`, or None.

    Checks that `meta` records this folder's key, and each array file's size, .npy header
    (shape, dtype) and sampled sha256 against its record; `full` also reads every byte against
    the sha256 (see the module docstring for why opening the cache does not).

    Returns:
        One phrase naming the file and the difference, e.g. "image.npy is 1000 bytes, recorded
        442496", or None for an intact case.
    """
    folder = Path(folder)
    if meta.get("key") != folder.name:
        return f"meta.json records case key {meta.get('key')}, but the folder is {folder.name}"
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != {n for n in case_files(meta) if n.endswith(".npy")}:
        return "meta.json records no size, shape, dtype and checksum for its files"
    for name, record in sorted(files.items()):
        problem = _file_problem(folder / name, record, full)
        if problem is not None:
            return problem
    if files["image.npy"]["shape"] != meta["output_shape"]:
        return f"image.npy is {files['image.npy']['shape']}, but meta.json says {meta['output_shape']}"
    return None


def case_files(meta: dict) -> tuple[str, ...]:
    """The files of a complete case folder (a meta without `mask` predates mask-less cases)."""
    return CASE_FILES if meta.get("mask", True) else tuple(n for n in CASE_FILES if n != "mask.npy")
