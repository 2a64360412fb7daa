"""The trainer's run folder, and resuming an interrupted run (in-process; `test_resume.py` kills a
real process)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kerasmed.training import callbacks
from kerasmed.training.trainer import train
from serving.errors import ConfigError, DataError
from serving.ownership import RUN, read_marker
from tests.helpers import assert_one_line_error, folder_digest, kerasmed_process
from tests.kerasmed.training.tiny_run import (
    CONFIG,
    RESUMABLE,
    model_weights,
    read_log,
    tiny_config,
    tiny_overrides,
)


def test_finished_run_folder(reference_run):
    run_dir, summary = reference_run
    for rel in ("config.yaml", "model.keras", "checkpoints/best.keras", "training_log.csv",
                "train_summary.json"):
        assert (run_dir / rel).is_file(), rel
    assert not (run_dir / "backup").exists()  # removed once the run is complete
    marker = read_marker(run_dir)  # training made the folder, so a later run may tell it is a run
    assert marker["kind"] == RUN and marker["created_by"] == "kerasmed train"
    assert not [p for p in run_dir.rglob(".*") if ".tmp-" in p.name]  # no temporaries left
    assert [r["epoch"] for r in read_log(run_dir / "training_log.csv")] == ["0", "1", "2"]
    assert json.loads((run_dir / "train_summary.json").read_text()) == summary
    assert summary["epochs_run"] == 3 and summary["resumed_from_epoch"] is None
    assert summary["chief"] and summary["replicas"] == 1 and summary["global_batch_size"] == 4


def _interrupt_second_backup(monkeypatch):
    """Make the 2nd epoch's backup die half-written, as a `kill -9` during the write would."""
    save, calls = callbacks.AtomicBackupAndRestore._save_model, []

    def dying_save(self):
        calls.append(1)
        if len(calls) == 2:
            Path(self.backup_dir, ".epoch-00002.tmp-0123abcd.weights.h5").write_bytes(b"half a file")
            raise KeyboardInterrupt("killed while writing the backup")
        save(self)

    monkeypatch.setattr(callbacks.AtomicBackupAndRestore, "_save_model", dying_save)


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tiny_data, reference_run, tmp_path,
                                                                   monkeypatch, capsys):
    config, run_dir = tiny_config(tiny_data, *RESUMABLE), tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_second_backup(m)
        with pytest.raises(KeyboardInterrupt):
            train(config, run_dir, progress=False)
    assert not (run_dir / "model.keras").exists()  # nothing looks finished
    # The killed run logged epoch 1 but never committed its backup: the backup is still epoch 1.
    assert [r["epoch"] for r in read_log(run_dir / "training_log.csv")] == ["0", "1"]
    assert callbacks.read_backup(run_dir / "backup")["epoch"] == 1
    capsys.readouterr()

    summary = train(config, run_dir, progress=False)

    assert "resuming from epoch 1" in capsys.readouterr().out
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    assert not (run_dir / "backup").exists()
    reference_dir, reference = reference_run
    # Same data stream, optimizer state, callbacks and log as if it had never stopped: with
    # `training.deterministic` the result is bit-identical.
    assert read_log(run_dir / "training_log.csv") == read_log(reference_dir / "training_log.csv")
    for a, b in zip(model_weights(run_dir / "model.keras"), model_weights(reference_dir / "model.keras"),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert summary["best_val_dice"] == reference["best_val_dice"]


def test_backup_of_another_config_is_refused(tiny_data, reference_run, tmp_path):
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "epoch-00001.weights.h5").write_bytes(b"")
    from kerasmed.training.trainer import resume_fingerprint

    old = resume_fingerprint(tiny_config(tiny_data, *RESUMABLE))
    (backup / callbacks.BACKUP_METADATA).write_text(json.dumps(
        {"epoch": 1, "weights": "epoch-00001.weights.h5", "config": old}))
    with pytest.raises(ConfigError, match=r"training\.epochs: 3 -> 5.*Received"):
        train(tiny_config(tiny_data, *RESUMABLE, "training.epochs=5"), tmp_path / "run", progress=False)
    # Keys that do not change training (output folder, time limit) do not block a resume.
    assert resume_fingerprint(tiny_config(tiny_data, *RESUMABLE, "training.max_minutes=5")) == old


def _finished_run(reference_run, tmp_path) -> Path:
    """A private copy of the reference run (a finished run folder) that a test may damage."""
    return Path(shutil.copytree(reference_run[0], tmp_path / "finished"))


def _broken_data(tiny_data, tmp_path) -> Path:
    """A copy of the tiny dataset (no cache yet) whose first case has a truncated DICOM slice."""
    root = Path(shutil.copytree(tiny_data, tmp_path / "broken", ignore=shutil.ignore_patterns("cache")))
    slice_ = sorted((root / "cases" / "case_000" / "dicom").iterdir())[5]
    slice_.write_bytes(slice_.read_bytes()[:4000])
    return root


def test_finished_run_is_refused_without_overwrite(tiny_data, reference_run, tmp_path):
    run_dir = _finished_run(reference_run, tmp_path)
    before = folder_digest(run_dir)
    with pytest.raises(ConfigError, match=r"must not hold a finished run.*`kerasmed train --overwrite` "
                       r"\(Python: `train\(config, overwrite=True\)`\).*Received: .*finished holding "
                       r"model\.keras and train_summary\.json"):
        train(tiny_config(tiny_data, *RESUMABLE), run_dir, progress=False)
    assert folder_digest(run_dir) == before


def test_overwrite_reads_the_data_before_touching_the_finished_run(tiny_data, reference_run, tmp_path):
    run_dir, broken = _finished_run(reference_run, tmp_path), _broken_data(tiny_data, tmp_path)
    before = folder_digest(run_dir)
    with pytest.raises(DataError, match="IM0006.dcm` is truncated"):
        train(tiny_config(broken, *RESUMABLE), run_dir, progress=False, overwrite=True)
    # Not one byte of the finished run changed: model.keras, config.yaml, summary, log.
    assert folder_digest(run_dir) == before


def test_overwrite_builds_the_model_before_touching_the_finished_run(tiny_data, reference_run, tmp_path):
    run_dir = _finished_run(reference_run, tmp_path)
    before = folder_digest(run_dir)
    with pytest.raises(ConfigError, match=r"Unknown model `unet9d`"):
        train(tiny_config(tiny_data, *RESUMABLE, "model.name=unet9d"), run_dir, progress=False,
              overwrite=True)
    assert folder_digest(run_dir) == before


def test_overwrite_trains_a_finished_run_again(tiny_data, reference_run, tmp_path):
    run_dir = _finished_run(reference_run, tmp_path)
    summary = train(tiny_config(tiny_data, *RESUMABLE, "training.epochs=1"), run_dir, progress=False,
                    overwrite=True)
    assert summary["epochs_run"] == 1 and summary["resumed_from_epoch"] is None
    assert [r["epoch"] for r in read_log(run_dir / "training_log.csv")] == ["0"]
    assert "epochs: 1" in (run_dir / "config.yaml").read_text()
    assert json.loads((run_dir / "train_summary.json").read_text()) == summary


def test_folder_that_is_no_run_is_refused(tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yml").write_text("my own notes")
    with pytest.raises(ConfigError, match=r"must be new, empty or a kerasmed run folder.*--overwrite.*"
                       r"Received: .*mine holding 'config.yml'"):
        train(tiny_config(tiny_data, *RESUMABLE), mine, progress=False)
    assert [p.name for p in mine.iterdir()] == ["config.yml"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="The run folder must be a folder. Received: .*file is a file"):
        train(tiny_config(tiny_data, *RESUMABLE), tmp_path / "file", progress=False, overwrite=True)


def test_cli_refuses_a_finished_run_and_keeps_it_when_the_data_is_broken(tiny_data, reference_run,
                                                                        tmp_path):
    run_dir, broken = _finished_run(reference_run, tmp_path), _broken_data(tiny_data, tmp_path)
    model = (run_dir / "model.keras").read_bytes()
    before = folder_digest(run_dir)

    def kerasmed_train(data_root, *flags):
        sets = [a for item in tiny_overrides(data_root, *RESUMABLE) for a in ("--set", item)]
        return kerasmed_process("-q", "train", CONFIG, *sets, "--run-dir", run_dir, *flags)

    assert_one_line_error(kerasmed_train(tiny_data), "kerasmed train: error:", "finished run",
                          "kerasmed train --overwrite", f"Received: {run_dir} holding model.keras")
    assert folder_digest(run_dir) == before
    assert_one_line_error(kerasmed_train(broken, "--overwrite"), "kerasmed train: error:",
                          "IM0006.dcm` is truncated")
    assert (run_dir / "model.keras").read_bytes() == model
    assert folder_digest(run_dir) == before
