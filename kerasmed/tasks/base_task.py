"""The training side of a task: targets, sampling, loss and metrics, evaluation.

The trainer, `evaluate`, `export` and `compare` ask the config's task (`task:` key) and never
branch on its name:

- `check_config(config)`: the rules a config must meet for this task (raise ConfigError);
- `check_cases(config, cases)`: the rules the training and validation cases must meet (raise
  DataError), checked before TensorFlow loads;
- `generate(config, root, ...)`: the task's built-in synthetic dataset;
- `model_arguments(config)`: the model builder's task-given arguments (input shape, classes);
- `train_dataset(config, cases, manifest, batch_size, **shard)`, `val_dataset(...)`: the tf.data
  training stream (targets from the cached cases and the manifest, the task's sampler) and the
  validation dataset;
- `loss(config)`, `metrics(config)`, `monitor`: the loss, the training metrics, and the validation
  metric that checkpoints and early stopping watch;
- `prepare_model`, `second_phase_epochs`, `enter_second_phase`: a two-phase schedule (transfer
  learning: frozen backbone, then the top blocks fine-tuned at a lower learning rate);
- `evaluate(run_dir, config, cases, split, progress)`: the evaluation metrics, baseline and plots,
  written into `<run_dir>/eval/`;
- `export_arguments(config, run_dir)`, `export_model(model, config, run_dir)`: class names and
  post-processing for the bundle, and the model it ships (e.g. with a fitted temperature);
- `parity_truth(row, config)`: a manifest row's ground truth for parity (or None).

Its runtime side (`serving.tasks`, the same name) is `runtime`. A task module imports TensorFlow
inside its methods only: the config validates `check_config` without loading TensorFlow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from serving.tasks import RuntimeTask, runtime_task

if TYPE_CHECKING:
    import keras
    import pandas as pd
    import tensorflow as tf


class TrainingTask(ABC):
    """Base of the training side of every task (see the module docstring)."""

    name: ClassVar[str]
    # The validation metric checkpoints and early stopping watch, and its better direction.
    monitor: ClassVar[str]
    monitor_mode: ClassVar[str] = "max"
    # Whether Grad-CAM and occlusion (`kerasmed explain`) apply: they explain a class score.
    explains_class_scores: ClassVar[bool] = False
    # Whether `kerasmed bench-train` can time this task's training (its patch pipeline against a
    # PyTorch twin of its model).
    has_training_benchmark: ClassVar[bool] = False

    @property
    def runtime(self) -> RuntimeTask:
        return runtime_task(self.name)

    def check_config(self, config) -> None:  # noqa: B027 - most tasks have no extra rule
        """Raise ConfigError naming the keys of a config this task cannot train."""

    def required_columns(self, config) -> dict[str, str]:
        """Canonical manifest columns training needs, each with the sentence of its error."""
        return {}

    def check_cases(self, config, cases: pd.DataFrame) -> None:  # noqa: B027 - most have no rule
        """Raise DataError if the cases a run trains on (`train` and `val` rows, canonical
        columns) cannot train this task, e.g. a split without both classes (no TensorFlow)."""

    @abstractmethod
    def model_arguments(self, config) -> dict[str, Any]:
        """The builder arguments the task decides (`input_shape`, `num_classes`, ...)."""

    @abstractmethod
    def input_signature(self, config) -> tuple[tf.TensorSpec, tf.TensorSpec]:
        """`(inputs, targets)` specs of one training batch (multi-worker training needs them)."""

    @abstractmethod
    def train_dataset(self, config, cases, manifest: pd.DataFrame | None,
                      batch_size: int | None = None, **shard) -> tf.data.Dataset:
        """The endless training stream over cached `cases` (`shard`: `skip`, `num_shards`,
        `shard_index` of one worker's share of one global stream)."""

    @abstractmethod
    def val_dataset(self, config, cases, manifest: pd.DataFrame | None,
                    batch_size: int) -> tf.data.Dataset:
        """The validation dataset over cached `cases`."""

    @abstractmethod
    def loss(self, config) -> keras.losses.Loss:
        """The training loss."""

    @abstractmethod
    def metrics(self, config) -> list:
        """Training metrics; one of them is logged as `monitor` on validation data."""

    @abstractmethod
    def evaluate(self, run_dir: Path, config, cases: pd.DataFrame, split: str,
                 progress: bool = True) -> dict[str, Any]:
        """Score the run's model on `cases` and write `<run_dir>/eval/`; returns the summary."""

    @abstractmethod
    def export_arguments(self, config, run_dir: Path) -> dict[str, Any]:
        """`class_names` and `postprocess` of the run's bundle."""

    @abstractmethod
    def generate(self, config, root: str | Path, progress: bool = True, overwrite: bool = False,
                 created_by: str = "kerasmed generate") -> Path:
        """Write (or reuse) the task's synthetic dataset (`synthetic:` keys) into `root`; returns
        its manifest (or ImageFolder root)."""

    def training_baseline(self, config, train_cases, val_cases, manifest) -> dict[str, Any] | None:
        """The task's baseline fitted on the cached training cases and scored on the validation
        cases, for the training summary (None: the task scores its baseline in `evaluate`)."""
        return None

    def prepare_model(self, model, config) -> None:  # noqa: B027 - most tasks change nothing
        """Adjust a freshly built model before it is compiled (default: nothing)."""

    def second_phase_epochs(self, model, config) -> int:
        """Epochs of a second training phase after `training.epochs` (default: none)."""
        return 0

    def enter_second_phase(self, model, config) -> float:
        """Switch `model` to the second phase; returns its learning rate."""
        raise NotImplementedError(f"task {self.name} has no second training phase")

    def export_model(self, model, config, run_dir: Path):
        """The model the bundle ships (default: the run's model as trained)."""
        return model

    def parity_truth(self, row, config):
        """The ground truth parity compares AUCs against (None: the task needs none)."""
        return None

    def headline(self, summary: dict[str, Any]) -> str:
        """One line for the terminal: the evaluation's main figure beside its baseline."""
        return ", ".join(f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float)))
