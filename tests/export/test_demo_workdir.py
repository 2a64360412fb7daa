"""`kerasmed demo --workdir W` never deletes what it did not make, and checks everything first.

The refusals run before TensorFlow is imported, so these processes take about a second each.
"""

from pathlib import Path

import pytest

from export.demo import DEMO, prepare_demo
from serving.errors import ConfigError
from serving.ownership import DATASET, REPORT, RUN, write_marker
from tests.helpers import assert_one_line_error, folder_digest, kerasmed_process

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"


def _workdir_with_user_data(tmp_path) -> Path:
    workdir = tmp_path / "work"
    (workdir / "data" / "scans").mkdir(parents=True)
    (workdir / "data" / "scans" / "IM0001.dcm").write_bytes(b"\x00" * 300)
    (workdir / "data" / "labels.csv").write_text("case,label\na,1\n")
    return workdir


def _demo(workdir, *args):
    return kerasmed_process("-q", "demo", "--workdir", workdir, "--config", CONFIG, "--profile", "tiny",
                            *args)


@pytest.mark.parametrize("override", ["training.epochs=0", "model.filterz=3", "synthetic.num_cases=1"])
def test_bad_config_fails_before_the_users_data_is_touched(tmp_path, override):
    workdir = _workdir_with_user_data(tmp_path)
    before = folder_digest(workdir)
    # With --overwrite too: the config is checked before anything is replaced.
    assert_one_line_error(_demo(workdir, "--set", override, "--overwrite"), "kerasmed demo: error:",
                          override.split("=")[0].split(".")[-1], "Received")
    assert folder_digest(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["data"]


def test_data_folder_the_demo_did_not_make_is_refused(tmp_path):
    workdir = _workdir_with_user_data(tmp_path)
    before = folder_digest(workdir)
    assert_one_line_error(_demo(workdir), "kerasmed demo: error:", "The demo's data folder",
                          "no .kerasmed marker", "Pass `kerasmed demo --overwrite`",
                          f"Received: {workdir / 'data'} holding 'labels.csv', 'scans'")
    assert folder_digest(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["data"]  # nothing else written either


def test_workdir_that_is_a_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert_one_line_error(_demo(path), "`--workdir` must be a folder", f"Received: {path} is a file")
    assert_one_line_error(_demo(path / "sub", "--overwrite"), "`--workdir` must be a folder",
                          f"{path} on its path is a file")
    assert path.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _as_a_demo_left_it(workdir: Path, run_made_by: str = DEMO) -> Path:
    """The folders an earlier demo leaves (markers and a finished run), without running one."""
    data, run, report = workdir / "data", workdir / "runs" / "lung_nodule_seg_2d", workdir / "report"
    for folder, kind, made_by in ((data, DATASET, DEMO), (run, RUN, run_made_by), (report, REPORT, DEMO)):
        folder.mkdir(parents=True)
        write_marker(folder, kind, made_by)
    (data / "dataset.json").write_text("{}")  # a dataset of other parameters
    (run / "model.keras").write_bytes(b"finished")
    (run / "config.yaml").write_text("name: lung_nodule_seg_2d\n")
    (report / "summary.md").write_text("# kerasmed demo\n")
    return run


def test_rerun_replaces_the_demos_own_folders(tmp_path):
    _as_a_demo_left_it(tmp_path)
    plan = prepare_demo(tmp_path, CONFIG, "tiny")
    assert plan.replace_data and plan.replace_run
    assert plan.config.run_dir() == tmp_path / "runs" / "lung_nodule_seg_2d"


def test_a_run_trained_by_kerasmed_train_is_not_the_demos(tmp_path):
    run = _as_a_demo_left_it(tmp_path, run_made_by="kerasmed train")
    with pytest.raises(ConfigError, match=r"The demo's run folder must be absent, empty or a training "
                       r"run folder that `kerasmed demo` made \(its \.kerasmed marker says: training run "
                       r"made by kerasmed train\)\. Pass `kerasmed demo --overwrite`"):
        prepare_demo(tmp_path, CONFIG, "tiny")
    assert prepare_demo(tmp_path, CONFIG, "tiny", overwrite=True).replace_run
    assert (run / "model.keras").read_bytes() == b"finished"


def test_report_folder_of_the_user_is_refused(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "draft.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"The demo's report folder .*holding 'draft.md'"):
        prepare_demo(tmp_path, CONFIG, "tiny")
    with pytest.raises(ConfigError, match=r"`profile` must be one of \['fast', 'full', 'tiny'\]"):
        prepare_demo(tmp_path, CONFIG, "huge")
