"""`StorageError`: a write the file system refuses, as one line naming the path and the reason."""

import errno
import os

import numpy as np
import pytest

from serving.atomic import atomic_dir, atomic_file, atomic_write_text
from serving.errors import KerasmedError, StorageError


@pytest.mark.parametrize("code, reason", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EDQUOT, "no space left: the disk quota is used up"),
    (errno.EFBIG, "no space left for the file: it exceeds the file system's or the process's "
                  "file-size limit"),
    (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "permission denied"),
    (errno.EPERM, "permission denied"),
    (errno.ENOTDIR, "not a folder"),
])
def test_each_refusal_names_the_path_and_the_reason(code, reason):
    err = StorageError.from_os_error(OSError(code, os.strerror(code), "/data/out/x.npy"))
    assert isinstance(err, KerasmedError) and isinstance(err, OSError) and err.errno == code
    assert str(err).startswith(f"Cannot write /data/out/x.npy: {reason}")
    assert str(err).endswith(f"Received: [Errno {code}] {os.strerror(code)}")
    assert "\n" not in str(err)


def test_temporary_names_are_shown_as_their_targets_and_a_nameless_error_takes_the_given_path():
    err = StorageError.from_os_error(
        OSError(errno.ENOSPC, "No space left on device", "/w/.bundle.tmp-1a2b3c4d/saved_model/x"))
    assert str(err).startswith("Cannot write /w/bundle/saved_model/x: no space left")
    # numpy and pydicom raise from a `write` that names no file; pydicom re-raises it as an
    # OSError without an errno, from the original.
    wrapped = OSError("With tag (7FE0,0010) got exception: [Errno 27] File too large")
    wrapped.__cause__ = OSError(errno.EFBIG, "File too large")
    err = StorageError.from_os_error(wrapped, "/w/.data.tmp-0badcafe", doing="write the dataset at")
    assert str(err).startswith("Cannot write the dataset at /w/data: no space left for the file")


@pytest.mark.parametrize("err", [
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"),
    OSError("no errno at all"),
    ValueError("not an OSError"),
    StorageError("already one"),
])
def test_other_errors_are_no_refusal(err):
    assert StorageError.from_os_error(err) is None


def test_atomic_writers_raise_a_refusal_naming_the_target_and_leave_no_temporary(tmp_path,
                                                                                 monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=rf"^Cannot write {tmp_path / 'bundle'}: no space left"):
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "a.txt").write_text("a")
            full()
    with pytest.raises(StorageError, match=rf"^Cannot write {tmp_path / 'out.npy'}: no space left"):
        with atomic_file(tmp_path / "out.npy") as tmp:
            np.save(tmp, np.zeros(3))
            full()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # A file where a folder must be: naming that file.
    (tmp_path / "file").write_text("mine")
    with pytest.raises(StorageError, match=rf"^Cannot write {tmp_path / 'file'}: not a folder"):
        atomic_write_text(tmp_path / "file" / "report.md", "x")
    # Anything else passes through unchanged.
    with pytest.raises(ValueError, match="^a bug$"):
        with atomic_dir(tmp_path / "bundle"):
            raise ValueError("a bug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
