"""Which folders kerasmed may replace: absent, empty, or marked by kerasmed as the right kind."""

import json

import pytest

from serving.errors import ConfigError, DataError
from serving.ownership import (
    BUNDLE,
    DATASET,
    MARKER,
    PARITY_REPORT,
    RUN,
    check_output_folder,
    enclosing_bundle,
    holds_only,
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


def _bundle_manifest(folder) -> None:
    """A folder holding one fake artefact and a bundle manifest that passes the schema."""
    import hashlib

    from serving.bundle import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not a model")
    write_manifest(folder, {"task": "segmentation", "input": {}, "artefacts": [
        {"format": "onnx", "file": "model.onnx", "sha256": hashlib.sha256(b"not a model").hexdigest()}]})


def test_an_earlier_versions_output_is_recognised_by_its_content(tmp_path):
    legacy = holds_only(("parity.json", "parity.md", "parity.png"), required=("parity.json",))
    (tmp_path / "parity.md").write_text("")
    with pytest.raises(ConfigError, match=r"\(it has no \.kerasmed marker and is no parity report of an "
                       r"earlier kerasmed version\)\. Choose another output folder"):
        check_output_folder(tmp_path, "`out`", PARITY_REPORT, None, legacy=legacy)
    (tmp_path / "parity.json").write_text("{}")
    assert check_output_folder(tmp_path, "`out`", PARITY_REPORT, None, legacy=legacy) is True
    (tmp_path / "cases.csv").write_text("a user's file beside it")
    with pytest.raises(ConfigError, match=r"Received: .* holding 'cases.csv', 'parity.json', 'parity.md'$"):
        check_output_folder(tmp_path, "`out`", PARITY_REPORT, None, legacy=legacy)
    assert (tmp_path / "cases.csv").read_text() == "a user's file beside it"


@pytest.mark.parametrize("how", ["marker", "manifest of an earlier version"])
def test_no_output_inside_a_bundle_but_its_own_reports(tmp_path, how):
    bundle = tmp_path / "bundle"
    if how == "marker":
        bundle.mkdir()
        write_marker(bundle, BUNDLE, "kerasmed export")
    else:
        _bundle_manifest(bundle)
    (bundle / "saved_model").mkdir()
    assert enclosing_bundle(bundle / "saved_model" / "deeper") == bundle
    assert enclosing_bundle(bundle) is None and enclosing_bundle(tmp_path / "beside") is None
    for inside in (bundle / "saved_model", bundle / "new", bundle / "parity"):
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=rf"^`out` must not lie inside the model bundle {bundle} "
                               rf".*Received: {inside}$"):
                check_output_folder(inside, "`out`", PARITY_REPORT, None, overwrite=overwrite)
    assert check_output_folder(bundle / "parity", "`out`", PARITY_REPORT, None,
                               bundle_reports=[bundle / "parity"]) is False
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        [".kerasmed", "saved_model"] if how == "marker" else ["manifest.json", "model.onnx", "saved_model"])


def test_a_stray_manifest_json_is_no_bundle(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text('{"images": ["a.png"], "task": "mine"}')
    assert enclosing_bundle(tmp_path / "data" / "check") is None
    assert check_output_folder(tmp_path / "data" / "check", "`out`", DATASET, None) is False
