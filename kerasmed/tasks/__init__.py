"""Tasks, training side (see `kerasmed.tasks.base_task`); `training_task(config)` gives the one a
config's `task:` key names."""

from kerasmed.tasks.base_task import TrainingTask
from kerasmed.tasks.registry import TRAINING_TASKS, training_task

__all__ = ["TRAINING_TASKS", "TrainingTask", "training_task"]
