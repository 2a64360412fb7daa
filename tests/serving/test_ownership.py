"""Which folders kerasmed may replace: absent, empty, or marked by kerasmed as the right kind."""

import json

import pytest

from serving.errors import ConfigError, DataError
from serving.ownership import (
    DATASET,
    MARKER,
    RUN,
    check_output_folder,
    read_marker,
    user_entries,
    write_marker,
)

FLAG = "--overwrite"


def check(folder, **kwargs):
    return check_output_folder(folder, "`out`", DATASET, FLAG, **kwargs)


def test_marker_round_trip_and_entries(tmp_path):
    write_marker(tmp_path, DATASET, "kerasmed generate")
    marker = read_marker(tmp_path)
    assert marker["kind"] == DATASET and marker["created_by"] == "kerasmed generate"
    assert "delete this file" in marker["note"]
    assert user_entries(tmp_path) == []
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("")
    assert user_entries(tmp_path) == ["a.txt", "b"]
    (tmp_path / MARKER).write_text("{not json")  # unreadable: not a marker, the folder is the user's
    assert read_marker(tmp_path) is None
    (tmp_path / MARKER).write_text(json.dumps(["a list"]))
    assert read_marker(tmp_path) is None


def test_absent_empty_or_own_folders_may_be_written(tmp_path):
    assert check(tmp_path / "new" / "deeper") is False
    assert check(tmp_path) is False
    write_marker(tmp_path, DATASET, "kerasmed demo")
    assert check(tmp_path) is False  # the marker alone is not content
    (tmp_path / "manifest.csv").write_text("")
    assert check(tmp_path) is True
    # The caller decides which markers it accepts.
    with pytest.raises(ConfigError, match=r"marker says: synthetic dataset made by kerasmed demo"):
        check(tmp_path, owned=lambda marker: marker["created_by"] == "kerasmed bench")


def test_other_folders_need_the_flag(tmp_path):
    (tmp_path / "scan.dcm").write_text("")
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match=r"^`out` must be absent, empty or a synthetic dataset folder "
                       r"that kerasmed made \(it has no \.kerasmed marker: kerasmed did not make it\)\. "
                       r"Pass --overwrite to replace it, deleting what it holds\. Received: .* holding "
                       r"'notes', 'scan.dcm'$"):
        check(tmp_path)
    assert check(tmp_path, overwrite=True) is True
    write_marker(tmp_path, RUN, "kerasmed train")  # a marker of another kind is not enough
    with pytest.raises(ConfigError, match=r"marker says: training run made by kerasmed train"):
        check(tmp_path)
    with pytest.raises(DataError, match=r"Choose another output folder, or empty this one yourself\."):
        check_output_folder(tmp_path, "`out`", DATASET, None, error=DataError)
    for _ in range(3):
        (tmp_path / f"more{_}").write_text("")
    with pytest.raises(ConfigError, match=r"holding 'more0', 'more1', 'more2' and 2 more$"):
        check(tmp_path)


def test_a_file_is_refused_whatever_the_flag(tmp_path):
    path = tmp_path / "out"
    path.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"`out` must be a folder\. Received: .*out is a file"):
            check(path, overwrite=overwrite)
        with pytest.raises(ConfigError, match=r"`out` must be a folder, but .*out on its path is a file"):
            check(path / "sub", overwrite=overwrite)
    assert path.read_text() == "mine"
