"""Train a model from a config: cache, tf.data, strategy, precision, Keras callbacks.

What differs by task (targets and sampler, loss and metrics, the monitored validation metric)
comes from the config's task (`kerasmed.tasks`); this module never branches on the task's name.

Run folder (`<output_dir>/<name>/`), written by the chief worker only:
    .kerasmed               marks a folder training created (see `serving.ownership`)
    config.yaml             the validated config, as used
    checkpoints/best.keras  best model by the task's validation metric (temporary name, renamed)
    training_log.csv        per-epoch metrics, each epoch once (a resumed run appends)
    tensorboard/            TensorBoard logs
    backup/                 while training: the last completed epoch's state (removed at the end)
    model.keras             the best model in float32, written last (its presence marks a finished run)
    fingerprint.json        the training set's `dataset_fingerprint` (the same on resuming)
    train_summary.json      epochs, best validation loss and monitored metric, dtype policy, strategy,
                            seconds, fingerprint

Crash safety: a run killed at any instant (even `kill -9`) and started again with the same
command resumes from its last completed epoch: weights, optimizer, data stream position, best
checkpoint score, early-stopping counters and the log all continue as if it had not stopped.

A diverged run is never finished: a NaN or infinite loss or weight ends training at once with a
`TrainingError` (`StopOnNonFinite`), before that epoch is checkpointed or backed up and before
`model.keras` is written; the weights are checked again just before they are saved.

Nothing finished is lost by accident: `train` refuses a folder holding a finished run (and a
non-empty folder that is no run) unless asked to overwrite it, and even then it reads the data
and builds the cache before it deletes or rewrites anything in the run folder.

Scale-out: under `MultiWorkerMirroredStrategy` (`TF_CONFIG` with several workers, e.g. from
`kerasmed train --workers N`) every worker reads its shard of one global example stream, so the
union of the workers' batches is the single-process global batch.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasmed.config import Config, save_config
from kerasmed.data.cache import load_cache
from kerasmed.data.check import training_cases
from kerasmed.data.fingerprint import ct_normalization, dataset_fingerprint
from kerasmed.models.float32 import as_float32
from kerasmed.models.registry import build_model
from kerasmed.run import BACKUP, check_run_dir
from kerasmed.tasks import training_task
from kerasmed.training.callbacks import (
    AtomicBackupAndRestore,
    AtomicModelCheckpoint,
    ResumableCSVLogger,
    ResumableEarlyStopping,
    StopOnNonFinite,
    TimeLimit,
    read_backup,
)
from kerasmed.training.inputs import cache_for
from kerasmed.training.multiworker import enable_multi_worker_fit, output_dir, synchronize_batch_norm
from kerasmed.training.strategy import (
    apply_precision,
    is_chief,
    is_multi_worker,
    seeded,
    select_strategy,
    task_id,
)
from serving.atomic import atomic_file, atomic_write_text
from serving.errors import ConfigError, DataError
from serving.ownership import RUN, read_marker, user_entries, write_marker

__all__ = ["TimeLimit", "build_compiled_model", "cache_for", "train"]

# Keys that do not change what training computes, so a resumed run may differ in them.
_RESUME_IGNORES = ("name", "output_dir", "synthetic", "data.cache_dir", "training.max_minutes")


def train_dataset(config: Config, cases, batch_size: int | None = None, manifest=None,
                  **shard) -> tf.data.Dataset:
    """The config's training stream over cached `cases` (the task's sampler, augmentation, seed).

    Args:
        config: validated config.
        cases: cached cases of the training split.
        batch_size: examples per batch; default `sampling.batch_size`.
        manifest: the dataset's table (targets a cache does not hold, e.g. labels).
        **shard: `skip`, `num_shards`, `shard_index` of the task's sampler.
    """
    return training_task(config.task).train_dataset(config, cases, manifest, batch_size, **shard)


def build_compiled_model(config: Config, fingerprint: dict | None = None) -> keras.Model:
    """The config's model, compiled with its task's loss and metrics and Adam (cosine-decayed).

    Args:
        config: validated config.
        fingerprint: the training set's `dataset_fingerprint`; required by
            `model.intensity: ct_fingerprint`, whose first layer holds its numbers.

    Raises:
        ConfigError: if `model.intensity` is `ct_fingerprint` and no fingerprint is given.
        DataError: if the fingerprint cannot z-score (see `fingerprint.ct_normalization`).
    """
    m, task = config.model, training_task(config.task)
    ct = None
    if m.intensity == "ct_fingerprint":
        if fingerprint is None:
            raise ConfigError(
                "`model.intensity: ct_fingerprint` needs the training set's dataset fingerprint "
                "(`kerasmed.data.fingerprint.dataset_fingerprint`) to build its first layer. "
                "Received: fingerprint=None"
            )
        ct = ct_normalization(fingerprint)
    model = build_model(
        m.name,
        **task.model_arguments(config),
        filters=m.filters,
        depth=m.depth,
        normalization=m.normalization,
        hu_window=m.hu_window,
        intensity=m.intensity,
        ct_normalization=ct,
        name=config.name.replace("-", "_"),
    )
    task.prepare_model(model, config)  # e.g. a pretrained backbone frozen for phase 1
    t = config.training
    # Cosine decay over the whole step budget: the last epochs at a small learning rate settle the
    # weights and BatchNorm statistics, so the result depends on the budget, not on when a noisy
    # validation curve happens to be stopped.
    schedule = keras.optimizers.schedules.CosineDecay(
        t.learning_rate, decay_steps=t.epochs * t.steps_per_epoch, alpha=0.02
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=task.loss(config),
        metrics=task.metrics(config),
    )
    return model


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


def resume_fingerprint(config: Config) -> dict:
    """The config entries a backup must share with the config that resumes it (flat keys)."""
    return {k: v for k, v in _flat(config.to_dict()).items()
            if not any(k == i or k.startswith(i + ".") for i in _RESUME_IGNORES)}


def _check_resumable(state: dict, config: Config, backup: Path) -> None:
    saved, now = state.get("config", {}), resume_fingerprint(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            "The run folder holds an unfinished training backup made with a different config "
            f"({diff}); rerun with the same config to resume it, or delete {backup} to start over. "
            f"Received: {backup.parent}"
        )


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summarize_log(rows: list[dict], monitor: str, mode: str) -> dict:
    """Epochs and the best epoch (by the monitored metric, first of equals) from the training log;
    the monitored metric's best value is `best_<monitor>` (e.g. `best_val_dice`)."""
    if not rows:
        return {"epochs_run": 0, "best_epoch": None, "best_val_loss": None, f"best_{monitor}": None}
    score = [float(r[monitor]) for r in rows]
    pick = max if mode == "max" else min
    best = pick(range(len(score)), key=score.__getitem__)
    return {
        "epochs_run": len(rows),
        "best_epoch": int(rows[best]["epoch"]) + 1,
        "best_val_loss": float(rows[best]["val_loss"]),
        f"best_{monitor}": score[best],
    }


def train(config: Config, run_dir: str | Path | None = None, progress: bool = True,
          overwrite: bool = False, skip_bad: bool = False) -> dict:
    """Train the config's model and write the run folder, resuming an interrupted run.

    Args:
        config: validated config.
        run_dir: output folder; default `config.output_dir/config.name`.
        progress: show progress bars.
        overwrite: train again from scratch into a folder holding a finished run (its model is
            replaced once the data has been read), or into a non-empty folder that is no run.
        skip_bad: check every case first and train on those without a problem
            (`kerasmed.data.check.training_cases`); without it the first bad case is an error.

    Returns:
        The training summary (also written to `train_summary.json` by the chief).

    Raises:
        ConfigError: if the run folder is a file, holds a finished run or someone else's files
            (without `overwrite`), or holds an unfinished backup of a different config.
        DataError: if the dataset, cache or backup is unreadable, a cached image holds NaN or
            inf, or `model.intensity` is `ct_fingerprint` and no training case has a foreground
            voxel. Nothing in the run folder has been deleted or rewritten then.
        TrainingError: if the loss or the weights become NaN or inf (`StopOnNonFinite`): the run
            folder keeps its last completed epoch's backup and no `model.keras` or
            `train_summary.json`, so it is no finished run.
    """
    # First: MultiWorkerMirroredStrategy has to configure TensorFlow before anything else does.
    strategy = select_strategy()
    chief, worker = is_chief(), task_id()[1]
    run_dir = Path(run_dir) if run_dir else config.run_dir()
    # Every worker checks (nothing is written yet), so that they all refuse together rather than
    # leave the others waiting for the chief in collective ops.
    check_run_dir(run_dir, overwrite)
    state = read_backup(run_dir / BACKUP)
    if state is not None:
        _check_resumable(state, config, run_dir / BACKUP)
    # The data is read and cached before the run folder is touched: a truncated file must fail
    # here, not after the finished run's model has been deleted.
    cases = training_cases(config, skip_bad, progress and chief, write_report=chief)
    cache = cache_for(config, progress and chief, manifest=cases)
    data = cache, load_cache(cache, "train"), load_cache(cache, "val"), cases
    check_finite_cases(data[1] + data[2])  # what the sampler and validation read
    # Before the model, whatever `model.intensity`: it is cheap, documents the data, and its
    # numbers are deterministic, so a resumed run builds the same first layer.
    fingerprint = dataset_fingerprint(data[1], seed=config.seed)
    policy = apply_precision(config.training.mixed_precision)
    try:
        with seeded(config.seed, config.training.deterministic):
            # Built before the run folder is touched too: a config the builder refuses fails here.
            model = _build(config, strategy, fingerprint)
            with output_dir(run_dir, chief, worker) as out:
                if chief:
                    _prepare_run_dir(run_dir, config, resuming=state is not None)
                    atomic_write_text(run_dir / "fingerprint.json", json.dumps(fingerprint, indent=2))
                    if state is not None:
                        print(f"resuming from epoch {state['epoch']} ({state['epoch']} of "
                              f"{config.training.epochs} epochs done)", flush=True)
                else:
                    print(f"worker {worker}: writing to temporary folder {out} (removed at the end)",
                          flush=True)
                summary = _fit(config, strategy, model, run_dir, out, state, data, progress and chief)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    summary.update(dtype_policy=policy, chief=chief, worker=worker, fingerprint=fingerprint,
                   baseline=training_task(config.task).training_baseline(config, *data[1:]))
    if chief:
        atomic_write_text(run_dir / "train_summary.json", json.dumps(summary, indent=2))
        # Last: until the run is complete, its backup is what a restart resumes from.
        shutil.rmtree(run_dir / BACKUP, ignore_errors=True)
    return summary


def check_finite_cases(cases) -> None:
    """Refuse cached cases whose image holds NaN or inf, which would train a NaN model.

    The readers refuse such source files, so this finds a cache damaged or edited after it was
    built. Read a few slices at a time (the images are memory-mapped).

    Raises:
        DataError: naming the first such case, its cache file and the count.
    """
    for case in cases:
        image, bad = case.image, 0
        for start in range(0, len(image), 16):
            block = image[start:start + 16]
            bad += int(block.size - np.count_nonzero(np.isfinite(block)))
        if bad:
            where = getattr(image, "filename", None) or "the cache"
            raise DataError(
                f"Cached case {case.case_id} must hold finite intensities (the cache was damaged "
                f"or edited after it was built); delete its folder and run `kerasmed preprocess "
                f"CONFIG` to rebuild it. Received: {bad} of {image.size} voxels NaN or inf in {where}"
            )


def _prepare_run_dir(run_dir: Path, config: Config, resuming: bool) -> None:
    if read_marker(run_dir) is None and not user_entries(run_dir):
        write_marker(run_dir, RUN, "kerasmed train")  # a folder training made, not one it was given
    # Outputs of an earlier finished run would make this one look complete while it trains.
    (run_dir / "model.keras").unlink(missing_ok=True)
    (run_dir / "train_summary.json").unlink(missing_ok=True)
    if not resuming:
        shutil.rmtree(run_dir / BACKUP, ignore_errors=True)  # half-written first backup, if any
    save_config(config, run_dir / "config.yaml")
    (run_dir / "checkpoints").mkdir(exist_ok=True)


def _build(config: Config, strategy, fingerprint: dict) -> keras.Model:
    """The compiled model, set up for the strategy's replicas and workers."""
    with strategy.scope():
        model = build_compiled_model(config, fingerprint)
    if strategy.num_replicas_in_sync > 1:
        synchronize_batch_norm(model)  # statistics of the global batch, however it is split
    if is_multi_worker(strategy):
        enable_multi_worker_fit(model, strategy, training_task(config.task).input_signature(config))
    return model


def _enter_second_phase(task, model: keras.Model, config: Config, strategy) -> float:
    """Switch to the task's phase 2 (e.g. unfreeze the top blocks) and recompile at its learning
    rate, keeping the loss and metrics; returns that learning rate."""
    learning_rate = task.enter_second_phase(model, config)
    with strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=model.loss,
                      metrics=task.metrics(config))
    print(f"phase 2: fine-tuning at learning rate {learning_rate:g}", flush=True)
    return learning_rate


def _advice(learning_rate: float, phase: str = "`training.learning_rate`") -> str:
    return (f"Lower the learning rate ({phase}, {learning_rate:g} now), or check the data for NaN "
            "or inf values")


def _fit(config: Config, strategy, model: keras.Model, run_dir: Path, out: Path, state: dict | None,
         data: tuple, progress: bool) -> dict:
    cache, train_cases, val_cases, manifest = data
    task = training_task(config.task)
    replicas = strategy.num_replicas_in_sync
    s, t = config.sampling, config.training
    global_batch = s.batch_size * replicas  # `sampling.batch_size` is per replica

    skip = int(state.get("examples", 0)) if state else 0

    def shard_dataset(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return train_dataset(
            config, train_cases, ctx.get_per_replica_batch_size(global_batch), manifest,
            skip=skip, num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id,
        )

    val_ds = task.val_dataset(config, val_cases, manifest, max(1, s.batch_size // 2) * replicas)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val_ds = val_ds.with_options(options)

    initial_epoch = int(state["epoch"]) if state else 0
    best_path = out / "checkpoints" / "best.keras"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    # The task's validation metric (segmentation: whole-slice Dice) is what evaluation measures;
    # the loss is noisier.
    monitor, mode = task.monitor, task.monitor_mode
    checkpoint = AtomicModelCheckpoint(str(best_path), monitor=monitor, mode=mode, save_best_only=True)
    early = ResumableEarlyStopping(
        best_weights_path=run_dir / "checkpoints" / "best.keras", monitor=monitor, mode=mode,
        patience=t.early_stopping_patience, restore_best_weights=True,
    )
    if state:
        checkpoint.set_state(state.get("callbacks", {}).get("checkpoint", {}))
        early.set_state(state.get("callbacks", {}).get("early_stopping", {}))
    limit = TimeLimit(t.max_minutes) if t.max_minutes else None
    csv_log = ResumableCSVLogger(str(out / "training_log.csv"), initial_epoch)
    guard = StopOnNonFinite(str(run_dir), _advice(t.learning_rate))
    callbacks = [
        guard,  # first: a NaN epoch ends before the others checkpoint or back it up
        checkpoint,
        csv_log,
        keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), write_graph=False),
        early,
        *([limit] if limit else []),
        # Last, so that it records the end-of-epoch state of the callbacks above.
        AtomicBackupAndRestore(
            out / BACKUP, restore_dir=run_dir / BACKUP,
            state_callbacks={"checkpoint": checkpoint, "early_stopping": early},
            examples_per_step=global_batch, metadata={"config": resume_fingerprint(config)},
        ),
    ]
    # Phase 2 (the task's, e.g. fine-tuning the top of a pretrained backbone) runs `extra` epochs
    # after `training.epochs`; a run resumed inside it is switched to it before its backup loads.
    extra = task.second_phase_epochs(model, config)
    second = "phase 2 of the task"
    if extra and initial_epoch >= t.epochs:
        guard.advice = _advice(_enter_second_phase(task, model, config, strategy), second)
    total = t.epochs + extra
    # A backup taken as training stopped (early stopping, time limit) only needs finishing.
    stopped = bool(state and state.get("stop_training"))
    start = time.monotonic()

    def fit(first: int, last: int) -> None:
        csv_log.initial_epoch = first  # phase 2 appends to phase 1's rows
        model.fit(
            strategy.distribute_datasets_from_function(shard_dataset),
            validation_data=strategy.experimental_distribute_dataset(val_ds),
            epochs=last,
            initial_epoch=first,
            shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a Dataset
            steps_per_epoch=t.steps_per_epoch,
            callbacks=callbacks,
            verbose=(1 if sys.stdout.isatty() else 2) if progress else 0,
        )

    try:
        if initial_epoch < t.epochs or not extra:
            fit(initial_epoch, initial_epoch if stopped else t.epochs)
        if extra and not stopped and not (limit and limit.stopped):
            if initial_epoch < t.epochs:
                guard.advice = _advice(_enter_second_phase(task, model, config, strategy), second)
            fit(max(initial_epoch, t.epochs), total)
    finally:
        csv_log.close()
    seconds = time.monotonic() - start
    # Early stopping may have restored the best epoch's weights: what is saved must be finite.
    guard.check_weights("by the end of training")
    if replicas > 1:
        synchronize_batch_norm(model, False)  # the saved model runs on one device
    # The run's model is float32 whatever the training precision, so evaluation scores exactly
    # the graph that export ships (a bfloat16 graph would not even load in onnxruntime).
    with atomic_file(out / "model.keras") as tmp:
        as_float32(model).save(tmp)
    return {
        **_summarize_log(_read_log(out / "training_log.csv"), monitor, mode),
        "monitor": monitor,
        "resumed_from_epoch": initial_epoch if state else None,
        "strategy": type(strategy).__name__,
        "replicas": replicas,
        "global_batch_size": global_batch,
        "deterministic": t.deterministic,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "stopped_by_time_limit": bool(limit and limit.stopped),
        "train_seconds": round(seconds, 1),
        "cache": str(cache),
    }
