"""Train a segmentation model from a config: cache, tf.data, strategy, precision, Keras callbacks.

Run folder (`<output_dir>/<name>/`):
    config.yaml          the validated config, as used
    checkpoints/best.keras  best model by validation Dice (ModelCheckpoint)
    training_log.csv     per-epoch metrics (CSVLogger)
    tensorboard/         TensorBoard logs
    model.keras          the best model in float32, written last (its presence marks a finished run)
    train_summary.json   epochs, best validation loss/Dice, dtype policy, strategy, seconds
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from kerasmed.config import Config, save_config
from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.cache import build_cache, load_cache
from kerasmed.data.manifest import read_manifest
from kerasmed.data.pipeline import make_train_dataset, make_val_dataset
from kerasmed.losses import DiceCELoss, DiceScore
from kerasmed.models.float32 import as_float32
from kerasmed.models.registry import build_model
from kerasmed.training.strategy import apply_precision, select_strategy


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


def cache_for(config: Config, progress: bool = True) -> Path:
    """Build (or reuse) the preprocessed cache of the config's dataset."""
    root = Path(config.data.root)
    manifest = read_manifest(root, config.data.manifest)
    cache_root = Path(config.data.cache_dir) if config.data.cache_dir else root / "cache"
    return build_cache(manifest, config.preprocessing.spec(), cache_root, progress=progress)


def build_compiled_model(config: Config) -> keras.Model:
    """The config's model, compiled with Dice+CE loss, Adam (cosine-decayed) and a Dice metric."""
    m = config.model
    model = build_model(
        m.name,
        input_shape=(None, None, m.context_slices),
        num_classes=m.num_classes,
        filters=m.filters,
        depth=m.depth,
        normalization=m.normalization,
        hu_window=m.hu_window,
        name=config.name.replace("-", "_"),
    )
    t = config.training
    # Cosine decay over the whole step budget: the last epochs at a small learning rate settle the
    # weights and BatchNorm statistics, so the result depends on the budget, not on when a noisy
    # validation curve happens to be stopped.
    schedule = keras.optimizers.schedules.CosineDecay(
        t.learning_rate, decay_steps=t.epochs * t.steps_per_epoch, alpha=0.02
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=DiceCELoss(dice_weight=config.training.dice_weight),
        metrics=[DiceScore(threshold=config.evaluation.threshold)],
    )
    return model


def train(config: Config, run_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train the config's model and write the run folder.

    Args:
        config: validated config.
        run_dir: output folder; default `config.output_dir/config.name`.
        progress: show progress bars.

    Returns:
        The training summary (also written to `train_summary.json`).
    """
    run_dir = Path(run_dir) if run_dir else config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.keras").unlink(missing_ok=True)  # a stale model would look like a finished run
    save_config(config, run_dir / "config.yaml")
    keras.utils.set_random_seed(config.seed)
    policy = apply_precision(config.training.mixed_precision)
    try:
        cache = cache_for(config, progress)
        train_cases, val_cases = load_cache(cache, "train"), load_cache(cache, "val")
        strategy = select_strategy()
        replicas = strategy.num_replicas_in_sync
        s, a = config.sampling, config.augmentation
        with strategy.scope():
            model = build_compiled_model(config)
        context = config.model.context_slices
        train_ds = make_train_dataset(
            train_cases,
            context,
            s.patch_size,
            s.batch_size * replicas,
            s.positive_fraction,
            RandomAugment2D(a.flip, a.rot90 and s.patch_size[0] == s.patch_size[1],
                            a.intensity_shift_hu, a.intensity_scale),
            s.shuffle_buffer,
            config.seed,
        )
        val_ds = make_val_dataset(val_cases, context, max(1, s.batch_size // 2) * replicas,
                                  config.training.max_val_slices)
        t = config.training
        callbacks = [
            # Whole-slice validation Dice is what evaluation measures; the loss is noisier.
            keras.callbacks.ModelCheckpoint(
                str(run_dir / "checkpoints" / "best.keras"), monitor="val_dice", mode="max",
                save_best_only=True,
            ),
            keras.callbacks.CSVLogger(str(run_dir / "training_log.csv")),
            keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
            keras.callbacks.EarlyStopping(
                monitor="val_dice", mode="max", patience=t.early_stopping_patience,
                restore_best_weights=True,
            ),
        ]
        limit = TimeLimit(t.max_minutes) if t.max_minutes else None
        if limit:
            callbacks.append(limit)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        start = time.monotonic()
        history = model.fit(
            strategy.experimental_distribute_dataset(train_ds),
            validation_data=strategy.experimental_distribute_dataset(val_ds),
            epochs=t.epochs,
            shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a Dataset
            steps_per_epoch=t.steps_per_epoch,
            callbacks=callbacks,
            verbose=(1 if sys.stdout.isatty() else 2) if progress else 0,
        )
        seconds = time.monotonic() - start
        val_loss, val_dice = history.history["val_loss"], history.history["val_dice"]
        best = max(range(len(val_dice)), key=val_dice.__getitem__)
        # The run's model is float32 whatever the training precision, so evaluation scores exactly
        # the graph that export ships (a bfloat16 graph would not even load in onnxruntime).
        tmp = run_dir / "model.keras.partial.keras"
        as_float32(model).save(tmp)
        tmp.replace(run_dir / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    summary = {
        "epochs_run": len(val_loss),
        "best_epoch": best + 1,
        "best_val_loss": float(val_loss[best]),
        "best_val_dice": float(val_dice[best]),
        "dtype_policy": policy,
        "strategy": type(strategy).__name__,
        "replicas": replicas,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "stopped_by_time_limit": bool(limit and limit.stopped),
        "train_seconds": round(seconds, 1),
        "cache": str(cache),
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
