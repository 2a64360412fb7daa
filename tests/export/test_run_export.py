from types import SimpleNamespace

import pytest

from export.run_export import compare_bundle, load_run_model, recorded_data_root
from serving.errors import ConfigError, DataError


def test_compare_refuses_a_file_as_report_folder_before_any_work(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("mine")
    # No bundle at all: the report folder is checked first, so nothing is read or run.
    with pytest.raises(ConfigError, match=r"`out_dir` \(the report folder\) must be a folder\. "
                       r"Received: .*report\.md is a file"):
        compare_bundle(tmp_path / "no_bundle", out_dir=report)
    assert report.read_text() == "mine"


def test_truncated_run_model_names_the_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match=r"model\.keras` must be a readable \.keras archive.*"
                       r"Received: a 104-byte file that is not a zip archive"):
        load_run_model(path)


def _bundle(path, extra):
    return SimpleNamespace(path=path, manifest={"extra": extra})


def test_recorded_data_root_is_relative_to_the_bundle_folder(tmp_path):
    data, bundle = tmp_path / "data", tmp_path / "runs" / "seg" / "bundle"
    data.mkdir()
    (data / "manifest.csv").write_text("case_id\n")
    recorded = recorded_data_root(_bundle(bundle, {"data_root": "../../../data"}), bundle)
    assert recorded.resolve() == data.resolve()
    # An absolute path, as bundles recorded before the rule, is still followed.
    assert recorded_data_root(_bundle(bundle, {"data_root": str(data)}), bundle) == data
    with pytest.raises(DataError, match=r"does not record its validation data; pass --data"):
        recorded_data_root(_bundle(bundle, {"data_root": None}), bundle)
    # An ImageFolder tree has no manifest file: its folder is the dataset.
    tree = tmp_path / "tree"
    tree.mkdir()
    assert recorded_data_root(_bundle(bundle, {"data_root": "../../../tree"}), bundle, None).resolve() \
        == tree.resolve()
    with pytest.raises(DataError, match=r"holds no ImageFolder tree there"):
        recorded_data_root(_bundle(bundle, {"data_root": "../../../gone"}), bundle, None)
    moved = tmp_path / "device" / "bundle"
    with pytest.raises(DataError, match=r"records its validation data at `\.\./\.\./\.\./data` "
                       r"relative to the bundle folder, which holds no manifest\.csv.*pass --data"):
        recorded_data_root(_bundle(moved, {"data_root": "../../../data"}), moved)


def test_compare_reads_the_manifest_with_the_runs_recorded_columns(tmp_path):
    from export.run_export import _recorded_config

    recorded = {"config": {"data": {"root": None, "format": "csv", "columns": {"image": "ct"}},
                           "model": {"class_names": ["healthy", "sick"], "num_classes": 1}}}
    config = _recorded_config(tmp_path, recorded, "segmentation")
    assert config.data.columns.image == "ct" and config.model.class_names == ("healthy", "sick")
    older = _recorded_config(tmp_path, {}, "segmentation")  # an older bundle
    assert older.data.columns.image == "image_path" and older.task == "segmentation"
    with pytest.raises(ConfigError, match=r"^The config recorded in bundle .*: Unknown config key "
                       r"`data.columns.imag`"):
        _recorded_config(tmp_path, {"config": {"data": {"columns": {"imag": "ct"}}}}, "segmentation")
