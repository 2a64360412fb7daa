"""Task name -> training side. Adding a task means one file in `kerasmed/tasks/` and one line here
(and its runtime side in `serving/tasks/`)."""

from __future__ import annotations

from serving.registry import Registry

TRAINING_TASKS = Registry("task", {
    "segmentation": "kerasmed.tasks.segmentation:SegmentationTraining",
    "classification": "kerasmed.tasks.classification:ClassificationTraining",
})


def training_task(name: str):
    """The training side of the task registered as `name`.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    return TRAINING_TASKS.lookup(name)()
