from serving.runners.base_runner import Runner, TensorSpec
from serving.runners.registry import get_runner_class, make_runner, register_runner, runner_names

__all__ = ["Runner", "TensorSpec", "get_runner_class", "make_runner", "register_runner", "runner_names"]
