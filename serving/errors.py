"""User-facing error types.

Every error a user can cause (bad config, bad file, missing dependency, tampered bundle) is one of
these. The CLI turns them into a single line and exit code 2; anything else is a bug and keeps its
traceback.
"""

import errno
import os
import re


class KerasmedError(Exception):
    """Base class of every error caused by user input rather than a bug."""


class ConfigError(KerasmedError, ValueError):
    """A configuration key or value is unknown or invalid."""


class DataError(KerasmedError, ValueError):
    """An input file or folder is missing, corrupt, truncated or of the wrong shape."""


class BundleError(KerasmedError):
    """A model bundle is incomplete, or an artefact does not match its recorded sha256."""


class DependencyError(KerasmedError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class ParityError(KerasmedError):
    """An exported artefact does not reproduce the Keras model within tolerance."""


class TrainingError(KerasmedError):
    """Training diverged: the loss or the weights became NaN or infinite (a learning rate too
    high, or non-finite data). The run is left unfinished, never saved as a model."""


class StorageError(KerasmedError, OSError):
    """The file system refused a write: no space left (or the process's file-size limit), a
    read-only file system, permission denied, or a file where a folder must be.

    Raised from the `OSError` it describes (`from_os_error`), keeping its `errno`, and naming the
    output as the user knows it: temporary names (`.<name>.tmp-<8 hex>`, see `serving.atomic`)
    are shown as the target they stand for.
    """

    @classmethod
    def from_os_error(cls, err: BaseException, path=None, doing: str = "write") -> "StorageError | None":
        """The `StorageError` for `err`, or None when `err` is no such refusal.

        Args:
            err: an `OSError`, or an error wrapping one as its cause (pydicom re-raises an
                `OSError` without an errno, from the original).
            path: the output to name when the error names no file (a failed `write` names none).
            doing: what was refused, as in "Cannot write PATH".
        """
        found = _refused_os_error(err)
        if found is None:
            return None
        code, cause = found
        shown = _untemporary(str(cause.filename if cause.filename is not None else path or "a file"))
        error = cls(f"Cannot {doing} {shown}: {REFUSALS[code]}. Received: [Errno {code}] "
                    f"{os.strerror(code)}")
        error.errno = code  # not `filename`, which would change how the message prints
        return error


# What `StorageError` says for each refusal; EFBIG (over the process's file-size limit, or the file
# system's largest file) is a full disk for the user.
REFUSALS = {
    errno.ENOSPC: "no space left on the device (free some space or write elsewhere)",
    errno.EDQUOT: "no space left: the disk quota is used up (free some space or write elsewhere)",
    errno.EFBIG: "no space left for the file: it exceeds the file system's or the process's "
                 "file-size limit (free some space, raise the limit or write elsewhere)",
    errno.EROFS: "the file system is read-only (choose a writable folder)",
    errno.EACCES: "permission denied (make it writable or choose another folder)",
    errno.EPERM: "permission denied: operation not permitted (choose another folder)",
    errno.ENOTDIR: "not a folder: a file lies on its path where a folder must be",
}
_TEMPORARY = re.compile(r"\.([^/]+?)\.(?:tmp|old|del)-[0-9a-f]{8}")


def _untemporary(path: str) -> str:
    """`path` with every temporary name of `serving.atomic` replaced by its target's name."""
    return _TEMPORARY.sub(lambda m: m.group(1), path)


def _refused_os_error(err: BaseException) -> "tuple[int, OSError] | None":
    """`(errno, the OSError carrying it)` of a refusal in `err` or the OSErrors it was raised from."""
    if isinstance(err, StorageError) or not isinstance(err, OSError):
        return None
    seen = 0
    while isinstance(err, OSError) and seen < 8:
        if err.errno in REFUSALS:
            return err.errno, err
        if err.errno is not None:
            return None
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
