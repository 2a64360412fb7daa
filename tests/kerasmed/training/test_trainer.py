"""The trainer's run folder, and resuming an interrupted run (in-process; `test_resume.py` kills a
real process)."""

import json
from pathlib import Path

import numpy as np
import pytest

from kerasmed.training import callbacks
from kerasmed.training.trainer import train
from serving.errors import ConfigError
from tests.kerasmed.training.tiny_run import RESUMABLE, model_weights, read_log, tiny_config


def test_finished_run_folder(reference_run):
    run_dir, summary = reference_run
    for rel in ("config.yaml", "model.keras", "checkpoints/best.keras", "training_log.csv",
                "train_summary.json"):
        assert (run_dir / rel).is_file(), rel
    assert not (run_dir / "backup").exists()  # removed once the run is complete
    assert not list(run_dir.rglob("*.partial*"))
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
            Path(self.backup_dir, ".partial-epoch-00002.weights.h5").write_bytes(b"half a file")
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
