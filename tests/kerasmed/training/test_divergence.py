"""A run whose loss or weights become NaN is stopped, said so, and never finished (issue 16)."""

import keras
import numpy as np
import pytest

from kerasmed.run import check_run_dir, load_run
from kerasmed.training.callbacks import StopOnNonFinite
from serving.errors import DataError, TrainingError
from tests.helpers import assert_one_line_error, kerasmed_in_process
from tests.kerasmed.training.tiny_run import CONFIG, tiny_overrides


def test_a_diverging_learning_rate_stops_unfinished_and_cannot_be_exported(tiny_data, tmp_path, capfd):
    # It used to train to the end, print "best val_dice 0.000" and save 100% NaN weights, which
    # `export` shipped.
    run = tmp_path / "run"
    sets = [a for o in tiny_overrides(tiny_data, "training.learning_rate=1e12") for a in ("--set", o)]
    trained = kerasmed_in_process(capfd, "-q", "train", CONFIG, *sets, "--run-dir", run)
    assert_one_line_error(trained, "kerasmed train: error: Training must keep a finite loss and finite "
                          "weights; the loss became nan at epoch 1, step ",
                          f"so training stopped and {run} is not a finished run (no model.keras)",
                          "Lower the learning rate (`training.learning_rate`, 1e+12 now)",
                          "Received: loss=nan")
    assert "best val_dice" not in trained.stdout
    # Not finished: nothing a finished run holds, no epoch logged or backed up on NaN weights.
    for finished in ("model.keras", "train_summary.json", "checkpoints/best.keras", "backup"):
        assert not (run / finished).exists(), finished
    log = run / "training_log.csv"
    assert not log.exists() or len(log.read_text().splitlines()) <= 1
    assert check_run_dir(run) is False  # an unfinished run: trained again without --overwrite
    with pytest.raises(DataError, match="no model.keras; training did not finish"):
        load_run(run)
    for command in ("export", "evaluate"):
        refused = kerasmed_in_process(capfd, "-q", command, run)
        assert_one_line_error(refused, f"kerasmed {command}: error: Run folder has no model.keras; "
                              f"training did not finish. Received: {run}")
    assert not (run / "bundle").exists() and not (run / "eval").exists()


def _guarded_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense"),
                              keras.layers.BatchNormalization(name="bn")])
    guard = StopOnNonFinite("runs/x", "Lower the learning rate")
    guard.set_model(model)
    return model, guard


def test_the_guard_stops_on_a_nan_loss_weight_or_validation_loss():
    model, guard = _guarded_model()
    guard.on_epoch_begin(2)
    guard.on_batch_end(0, {"loss": 0.7})
    guard.on_epoch_end(2, {"loss": 0.7, "val_loss": 0.9})  # all finite: nothing happens
    with pytest.raises(TrainingError, match=r"the loss became inf at epoch 3, step 5, so training "
                       r"stopped and runs/x is not a finished run \(no model.keras\)\. Lower the "
                       r"learning rate\. Received: loss=inf$"):
        guard.on_batch_end(4, {"loss": np.float32(np.inf)})
    with pytest.raises(TrainingError, match=r"validation loss became nan at epoch 3 \(the weights are "
                       r"finite: does the validation data hold NaN or inf\?\).*Received: val_loss=nan$"):
        guard.on_epoch_end(2, {"loss": 0.7, "val_loss": float("nan")})
    # BatchNorm's moving variance may turn NaN while the training loss (batch statistics) is finite.
    variance = model.get_layer("bn").moving_variance
    variance.assign(np.array([1.0, np.nan], np.float32))
    with pytest.raises(TrainingError, match=r"the weights became NaN or inf in epoch 3, so training "
                       r"stopped.*Received: NaN or inf in 1 weight array \(1 of 2 values\), e\.g\. "
                       r"`sequential(_[0-9]+)?/bn/moving_variance`$"):
        guard.on_epoch_end(2, {"loss": 0.7, "val_loss": 0.9})
    with pytest.raises(TrainingError, match="weights became NaN or inf by the end of training"):
        guard.check_weights("by the end of training")
