"""Crash-safe callbacks on a tiny dense model: atomic writes, and state that survives a restart."""

import json

import keras
import numpy as np
import pytest

from kerasmed.training.callbacks import (
    BACKUP_METADATA,
    AtomicBackupAndRestore,
    AtomicModelCheckpoint,
    ResumableCSVLogger,
    ResumableEarlyStopping,
    keep_epochs_before,
    read_backup,
)
from serving.errors import DataError

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(16, 2)
Y = X.sum(axis=1, keepdims=True)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def _fit(model, callbacks, epochs, initial_epoch=0):
    return model.fit(X, Y, batch_size=4, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
                     validation_data=(X, Y), callbacks=callbacks, verbose=0)


def _killed_half_way(partial: bytes):
    """A stand-in for `save`/`save_weights` that writes `partial` and is killed (KeyboardInterrupt)."""
    def save(filepath, **kwargs):
        with open(filepath, "wb") as f:
            f.write(partial)
        raise KeyboardInterrupt

    return save


def test_keep_epochs_before_keeps_bytes_and_drops_later_and_cut_rows(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n2,1.1\r\n3,1.")  # killed while writing epoch 3
    keep_epochs_before(log, 2)
    assert log.read_bytes() == b"epoch,loss\r\n0,1.5\r\n1,1.2\r\n"
    keep_epochs_before(log, 0)
    assert not log.exists()


def test_csv_logger_appends_each_epoch_once(tmp_path):
    log = tmp_path / "log.csv"
    model = _model()
    _fit(model, [ResumableCSVLogger(log)], epochs=3)
    _fit(model, [ResumableCSVLogger(log, initial_epoch=2)], epochs=4, initial_epoch=2)
    lines = log.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "0", "1", "2", "3"]


def test_checkpoint_is_replaced_atomically_and_keeps_a_better_best(tmp_path):
    path = tmp_path / "best.keras"
    model = _model()
    checkpoint = AtomicModelCheckpoint(str(path), monitor="val_loss", mode="min", save_best_only=True)
    _fit(model, [checkpoint], epochs=2)
    assert path.is_file() and not list(tmp_path.glob(".*"))  # no temporary left
    before, best = path.read_bytes(), checkpoint.get_state()["best"]

    # A save killed half-way leaves the previous checkpoint whole.
    model.save = _killed_half_way(b"half a zip")
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(2, {"val_loss": best / 2})
    assert path.read_bytes() == before

    # A resumed checkpoint knows the best so far and does not overwrite it with a worse model,
    # and a partial file left by the kill is never promoted.
    resumed = AtomicModelCheckpoint(str(path), monitor="val_loss", mode="min", save_best_only=True)
    resumed.set_state({"best": best})
    resumed.set_model(_model(seed=1))
    resumed.on_epoch_end(2, {"val_loss": best * 10})
    assert path.read_bytes() == before


def test_checkpoint_removes_temporaries_a_killed_run_left(tmp_path):
    stale = tmp_path / ".best.tmp-0123abcd.keras"  # `kill -9` mid-save skips every cleanup
    stale.write_bytes(b"half a zip")
    checkpoint = AtomicModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_loss", mode="min",
                                       save_best_only=True)
    _fit(_model(), [checkpoint], epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]


def test_backup_commits_atomically_and_restores_weights_optimizer_and_state(tmp_path):
    model = _model()
    early = ResumableEarlyStopping(monitor="val_loss", patience=5)
    backup = AtomicBackupAndRestore(tmp_path / "backup", state_callbacks={"early_stopping": early},
                                    examples_per_step=4, metadata={"config": {"seed": 0}})
    _fit(model, [early, backup], epochs=2)
    state = read_backup(tmp_path / "backup")
    assert state["epoch"] == 2 and state["steps"] == 8 and state["examples"] == 32
    assert state["config"] == {"seed": 0} and state["callbacks"]["early_stopping"]["wait"] == 0
    # One weights file (the previous epoch's was removed) and the metadata that names it.
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-00002.weights.h5", BACKUP_METADATA]
    weights, iterations = model.get_weights(), int(model.optimizer.iterations.numpy())

    # Killed while writing epoch 3's weights: epoch 2 is still the committed backup.
    model.save_weights = _killed_half_way(b"half an h5")
    with pytest.raises(KeyboardInterrupt):
        _fit(model, [backup], epochs=3, initial_epoch=2)
    assert read_backup(tmp_path / "backup")["epoch"] == 2

    fresh = _model(seed=1)
    restore = AtomicBackupAndRestore(tmp_path / "backup")
    restore.set_model(fresh)
    restore.on_train_begin()
    for a, b in zip(fresh.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations.numpy()) == iterations == 8
    assert restore.restored["epoch"] == 2 and restore.steps == 8


def test_early_stopping_resumes_counters_and_best_weights(tmp_path):
    best_path = tmp_path / "best.keras"
    best_model = _model(seed=3)
    best_model.save(best_path)
    early = ResumableEarlyStopping(best_weights_path=best_path, monitor="val_loss", patience=3,
                                   restore_best_weights=True)
    early.set_state({"best": 1e-9, "wait": 2, "best_epoch": 4})
    model = _model()
    _fit(model, [early], epochs=6, initial_epoch=5)  # no improvement on 1e-9: wait reaches 3
    assert early.stopped_epoch == 5 and early.best_epoch == 4
    for a, b in zip(model.get_weights(), best_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # restored from the best checkpoint


def test_unreadable_backup_names_the_folder(tmp_path):
    assert read_backup(tmp_path) is None
    (tmp_path / BACKUP_METADATA).write_text("{not json")
    with pytest.raises(DataError, match="delete .*Received"):
        read_backup(tmp_path)
    (tmp_path / BACKUP_METADATA).write_text(json.dumps({"epoch": 1, "weights": "gone.weights.h5"}))
    with pytest.raises(DataError, match="gone.weights.h5"):
        read_backup(tmp_path)
