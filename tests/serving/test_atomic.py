import pytest

from serving.atomic import (
    atomic_dir,
    atomic_file,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_sibling,
)


def test_success_replaces_target_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old folder stays complete until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_error_keeps_the_old_target_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_creates_missing_parents(tmp_path):
    with atomic_dir(tmp_path / "a" / "b") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "a" / "b" / "x").read_text() == "x"


# --- Files: atomic_write_bytes / atomic_write_text / atomic_file -------------------------------


def test_write_bytes_and_text_replace_the_file_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "a" / "report.json"
    assert atomic_write_bytes(target, b"old") == target  # missing parents are created
    atomic_write_text(target, "new\r\nline\n")
    assert target.read_bytes() == b"new\r\nline\n"  # no newline translation
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_atomic_file_keeps_every_suffix_for_writers_that_read_it(tmp_path):
    with atomic_file(tmp_path / "epoch-00002.weights.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".epoch-00002.tmp-")
        assert tmp.name.endswith(".weights.h5") and not tmp.exists()
        tmp.write_bytes(b"weights")
    assert temporary_sibling(tmp_path / "mask.nii.gz").name.endswith(".nii.gz")
    assert temporary_sibling(tmp_path / ".kerasmed").name.startswith(".kerasmed.tmp-")
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-00002.weights.h5"]


def test_atomic_file_error_or_nothing_written_leaves_the_target(tmp_path):
    target = tmp_path / "best.keras"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half a zip")
            raise KeyboardInterrupt
    with atomic_file(target):
        pass  # e.g. a checkpoint callback that found no improvement
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_remove_stale_temporaries_only_removes_this_targets_leftovers(tmp_path):
    target = tmp_path / "best.keras"
    stale = tmp_path / ".best.tmp-0123abcd.keras"
    stale.write_bytes(b"left by kill -9")
    for name in ("best.keras", ".other.tmp-0123abcd.keras", ".best.keras.old"):
        (tmp_path / name).write_bytes(b"keep")
    assert remove_stale_temporaries(target) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".best.keras.old", ".other.tmp-0123abcd.keras", "best.keras"]
