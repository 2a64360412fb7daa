"""What training under several replicas and workers needs beyond choosing the strategy.

- Only the chief writes the run folder. Other workers still run every save (Keras reads
  distributed variables, which may need collective ops that every worker must join), but into a
  temporary folder that is deleted at the end.
- BatchNorm statistics are computed over the global batch (`synchronized=True`), so a step does
  not depend on how the batch is split.
- Keras 3 `Model.fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585): its
  symbolic build calls `strategy.reduce` on the `(x, y)` batch, and its step outputs are reduced
  with `axis=0` although they are scalars. `enable_multi_worker_fit` works around both on one
  model instance.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf


@contextlib.contextmanager
def output_dir(run_dir: str | Path, chief: bool, worker: int = 0) -> Iterator[Path]:
    """The folder this process writes: `run_dir` on the chief, a deleted-after temp folder elsewhere.

    Example:
        >>> with output_dir("runs/x", chief=is_chief(), worker=task_id()[1]) as out:
        ...     callbacks = [keras.callbacks.CSVLogger(str(out / "training_log.csv"))]
    """
    if chief:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=f"kerasmed-worker{worker}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every `BatchNormalization` layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(batch_norm_layers(layer))
    return found


def synchronize_batch_norm(model: keras.Model, synchronized: bool = True) -> int:
    """Make BatchNorm use global batch statistics across replicas (or stop); returns the count.

    `synchronized` is read when the layer is called, so setting it after building works for the
    training functions traced afterwards. Set it back to False before saving a model for
    inference, so its config does not ask for a replica context it will not have.
    """
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.synchronized = synchronized
    return len(layers)


def enable_multi_worker_fit(model: keras.Model, strategy: tf.distribute.Strategy, input_signature) -> None:
    """Let `model.fit`/`evaluate` run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    1. The symbolic build (which creates optimizer and metric variables in cross-replica context)
       is done from `input_signature` instead of from a fetched batch that Keras tries to
       `strategy.reduce` as a nest.
    2. Step outputs (metric results, already identical on every replica because metric variables
       are summed across replicas) are returned with shape `(1,)`, so Keras' cross-worker
       `reduce("MEAN", v, axis=0)` is valid.

    Args:
        model: compiled under `strategy.scope()`.
        strategy: the multi-worker strategy.
        input_signature: `(x_spec, y_spec)` of one per-replica batch, e.g.
            `(tf.TensorSpec((None, 48, 48, 1)), tf.TensorSpec((None, 48, 48, 1)))`.
    """

    def maybe_symbolic_build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=input_signature)

    def rank1(step):
        def wrapped(data):
            return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

        return wrapped

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = rank1(model.train_step)
    model.test_step = rank1(model.test_step)
