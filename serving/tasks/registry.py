"""Task name -> runtime side. Adding a task means one file in `serving/tasks/` and one line here."""

from __future__ import annotations

from serving.registry import Registry
from serving.tasks.base_task import RuntimeTask

TASKS = Registry("task", {
    "segmentation": "serving.tasks.segmentation:Segmentation",
    "classification": "serving.tasks.classification:Classification",
})


def runtime_task(name: str) -> RuntimeTask:
    """The runtime side of the task registered as `name`.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    return TASKS.lookup(name)()
