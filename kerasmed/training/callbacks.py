"""Keras callbacks for training that survives `kill -9`: atomic writes and state that resumes.

A run killed at any instant and started again with the same command continues from its last
completed epoch:
- `AtomicBackupAndRestore` commits weights, optimizer state and the other callbacks' state once
  per epoch, in one atomic rename;
- `AtomicModelCheckpoint` writes `best.keras` under a temporary name and renames it, and restores
  its `best` so a resumed run never overwrites a better checkpoint;
- `ResumableEarlyStopping` restores `best`, `wait` and the best weights (from the best checkpoint);
- `ResumableCSVLogger` keeps the log rows of the completed epochs and appends, so every epoch
  appears once.

`StopOnNonFinite` ends a run whose loss or weights become NaN or infinite with a `TrainingError`,
before any of them commits that epoch, so a diverged run is never saved as finished.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import keras
import numpy as np

from kerasmed.run import BACKUP_METADATA, describe_nonfinite  # the run folder's layout: kerasmed.run
from serving.atomic import (  # noqa: F401 - atomic_write_text and fsync_file are re-exported
    atomic_file,
    atomic_write_text,
    fsync_file,
    remove_stale_temporaries,
)
from serving.errors import DataError, TrainingError

log = logging.getLogger(__name__)
BACKUP_FORMAT = 1


def _scalar(value):
    """A JSON-ready Python float from a Keras monitor value (float, numpy scalar or None)."""
    return None if value is None else float(value)


class TimeLimit(keras.callbacks.Callback):
    """Stop training once `minutes` have passed (checked after every batch; the current epoch
    is cut short, then validated and checkpointed as usual)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60.0
        self.start = time.monotonic()
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True
            self.stopped = True


def nonfinite_weights(model) -> list[tuple[str, int, int]]:
    """`(variable path, non-finite values, values)` of each weight of `model` holding NaN or inf."""
    found = []
    for variable in model.weights:
        values = np.asarray(variable)
        if values.dtype.kind != "f":
            continue
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            found.append((variable.path, bad, int(values.size)))
    return found


class StopOnNonFinite(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN(raise_error=True)` raising a `TrainingError`, plus a check of the weights
    once per epoch.

    Keras' default `TerminateOnNaN` sets `stop_training`, after which the epoch still ends as
    usual: validation runs on the NaN weights, the checkpoint and the backup record them, and the
    trainer would save them as the run's model. Raising ends `fit` at once, so the run keeps its
    last committed (finite) epoch and is never marked finished; a `TrainingError` (rather than
    Keras' RuntimeError) is one line from the CLI. Put it first among the callbacks, so that its
    end-of-epoch check (the weights, and the validation loss: BatchNorm's moving statistics may
    turn NaN while the training loss, computed on batch statistics, stays finite) runs before any
    other callback commits the epoch.

    Args:
        where: the run, for the message (e.g. its folder).
        advice: what to change, for the message (e.g. the learning rate in force).
    """

    def __init__(self, where: str, advice: str):
        super().__init__(raise_error=True)
        self.where, self.advice = where, advice
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._stop(f"loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}",
                       f"loss={float(loss)}")

    def on_epoch_end(self, epoch, logs=None):
        self.check_weights(f"in epoch {epoch + 1}")
        loss = (logs or {}).get("val_loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._stop(f"validation loss became {float(loss)} at epoch {epoch + 1} (the weights are "
                       "finite: does the validation data hold NaN or inf?)", f"val_loss={float(loss)}")

    def check_weights(self, when: str) -> None:
        """Raise `TrainingError` if a weight of the model is NaN or inf (`when`: for the message,
        e.g. "in epoch 3")."""
        found = nonfinite_weights(self.model)
        if found:
            self._stop(f"weights became NaN or inf {when}", describe_nonfinite(found))

    def _stop(self, what: str, received: str) -> None:
        raise TrainingError(
            f"Training must keep a finite loss and finite weights; the {what}, so training stopped "
            f"and {self.where} is not a finished run (no model.keras). {self.advice}. "
            f"Received: {received}"
        )


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves under a temporary name and renames, with a restorable `best`.

    A kill during the save leaves the previous checkpoint in place. `filepath` must be a plain
    path (no `{epoch}`-style placeholders). Arguments are those of `ModelCheckpoint`.
    """

    def __init__(self, filepath, **kwargs):
        super().__init__(filepath, **kwargs)
        final = Path(self.filepath)
        if "{" in final.name:
            raise ValueError(
                f"`AtomicModelCheckpoint` needs a plain file path. Received: filepath={filepath}"
            )

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        remove_stale_temporaries(self.filepath)  # left by a killed run; never promoted

    def on_epoch_end(self, epoch, logs=None):
        final = self.filepath
        # Keras saves only when the monitored value improved; `atomic_file` then renames the new
        # file into place, and leaves `final` as it was when nothing was written.
        with atomic_file(final) as partial:
            self.filepath = str(partial)
            try:
                super().on_epoch_end(epoch, logs)
            finally:
                self.filepath = final

    def get_state(self) -> dict:
        return {"best": _scalar(self.best)}

    def set_state(self, state: dict) -> None:
        self.best = state.get("best")


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose `best`, `wait` and best weights carry over a restart.

    Args:
        best_weights_path: the best checkpoint (`.keras`) of this run; a resumed run takes its
            best weights from it, since `restore_best_weights` would otherwise forget them.
        **kwargs: passed to `keras.callbacks.EarlyStopping`.
    """

    def __init__(self, best_weights_path: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self.best_weights_path = Path(best_weights_path) if best_weights_path else None
        self._restored: dict | None = None

    def get_state(self) -> dict:
        return {"best": _scalar(self.best), "wait": int(self.wait), "best_epoch": int(self.best_epoch)}

    def set_state(self, state: dict) -> None:
        self._restored = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self._restored:
            return
        self.best = self._restored.get("best")
        self.wait = int(self._restored.get("wait", 0))
        self.best_epoch = int(self._restored.get("best_epoch", 0))
        if self.restore_best_weights and self.best is not None:
            self.best_weights = self._load_best_weights()

    def _load_best_weights(self):
        path = self.best_weights_path
        if path is None or not path.is_file():
            log.warning("resumed early stopping has no best checkpoint at %s; best weights restart", path)
            return None
        weights = keras.saving.load_model(path, compile=False).get_weights()
        if [w.shape for w in weights] != [tuple(v.shape) for v in self.model.weights]:
            log.warning("best checkpoint %s does not match the model; best weights restart", path)
            return None
        return weights


def keep_epochs_before(path: str | os.PathLike, epochs: int, separator: str = ",") -> None:
    """Rewrite a `CSVLogger` file keeping its header and the rows of epochs `< epochs`, byte for byte.

    Rows of later epochs (logged by a run that was killed before its backup) and a row cut short
    by the kill are dropped. `epochs=0` removes the file.
    """
    path = Path(path)
    if epochs <= 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    width = len(next(csv.reader([lines[0]], delimiter=separator)))
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line], delimiter=separator), [])
        try:
            complete = line.endswith("\n") and len(row) == width and int(row[0]) < epochs
        except ValueError:
            complete = False
        if complete:
            kept.append(line)
    atomic_write_text(path, "".join(kept))


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` that appends after the rows of the `initial_epoch` completed epochs.

    Args:
        filename: the CSV log.
        initial_epoch: epochs already completed (0 starts a fresh log).
        separator: column separator.
    """

    def __init__(self, filename, initial_epoch: int = 0, separator: str = ","):
        super().__init__(filename, separator=separator, append=True)
        self.initial_epoch = int(initial_epoch)

    def on_train_begin(self, logs=None):
        keep_epochs_before(self.filename, self.initial_epoch, self.sep)
        super().on_train_begin(logs)

    def close(self) -> None:
        """Close the log if `fit` ended with an exception (Keras then skips `on_train_end`)."""
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()


def read_backup(backup_dir: str | os.PathLike) -> dict | None:
    """The committed state of an unfinished run's backup, or None when there is none.

    Raises:
        DataError: if the metadata is unreadable or names weights that are missing.
    """
    folder = Path(backup_dir)
    meta = folder / BACKUP_METADATA
    if not meta.is_file():
        return None
    try:
        state = json.loads(meta.read_text())
        weights = folder / state["weights"]
        int(state["epoch"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"Training backup metadata is unreadable; delete {folder} to restart the run. "
            f"Received: {meta}"
        ) from err
    if not weights.is_file():
        raise DataError(
            f"Training backup names weights that are missing; delete {folder} to restart the run. "
            f"Received: {weights}"
        )
    return state


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is committed atomically, with the run's resumable state.

    Keras writes `latest.weights.h5` in place and then the epoch number to a second file, so a kill
    during either write leaves a corrupt or inconsistent backup. Here each epoch's weights (model
    and optimizer) go to a new file, written under a temporary name and renamed; the metadata
    naming that file is then replaced in one rename, which is the commit. A kill at any instant
    leaves the previous committed backup usable. The metadata also records the examples consumed
    (to resume the data stream), whether training was stopping, and `get_state()` of the
    `state_callbacks`.

    Put it after the callbacks whose state it records, so it saves their end-of-epoch state.

    Args:
        backup_dir: folder this process writes its backup to.
        restore_dir: folder to restore from (default `backup_dir`); on a non-chief worker, the
            chief's backup.
        state_callbacks: name -> callback with `get_state()`.
        examples_per_step: global batch size, to count examples consumed.
        metadata: extra JSON-ready entries to record (e.g. the config).
    """

    def __init__(self, backup_dir, restore_dir=None, state_callbacks=None, examples_per_step: int = 0,
                 metadata: dict | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.restore_dir = Path(restore_dir or backup_dir)
        self.state_callbacks = dict(state_callbacks or {})
        self.examples_per_step = int(examples_per_step)
        self.metadata = dict(metadata or {})
        self.steps = 0
        self._epoch_steps = 0
        self.restored: dict | None = None

    def on_train_begin(self, logs=None):
        state = read_backup(self.restore_dir)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # so its state loads too
        self.model.load_weights(str(self.restore_dir / state["weights"]))
        self._current_epoch = int(state["epoch"])
        self.steps = int(state.get("steps", 0))
        self.restored = state

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._epoch_steps = batch + 1  # `batch` is the last step run (steps_per_execution aware)
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.steps += self._epoch_steps
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        with atomic_file(folder / name) as partial:
            self.model.save_weights(str(partial), overwrite=True)
        state = {
            **self.metadata,
            "format": BACKUP_FORMAT,
            "epoch": self._current_epoch,
            "steps": self.steps,
            "examples": self.steps * self.examples_per_step,
            "weights": name,
            "stop_training": bool(self.model.stop_training),
            "callbacks": {key: cb.get_state() for key, cb in self.state_callbacks.items()},
        }
        atomic_write_text(folder / BACKUP_METADATA, json.dumps(state, indent=2))
        for old in folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
