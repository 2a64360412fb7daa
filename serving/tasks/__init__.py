"""Tasks, runtime side: what a model is for, in numpy (see `serving.tasks.base_task`).

`TASKS` maps a task name to its `RuntimeTask` class; `runtime_task(name)` gives an instance.
"""

from serving.tasks.base_task import Agreement, CaseInputs, RuntimeTask
from serving.tasks.registry import TASKS, runtime_task

__all__ = ["TASKS", "Agreement", "CaseInputs", "RuntimeTask", "runtime_task"]
