"""Benchmarks: `kerasmed bench-train` measures training throughput against its ceiling and a peer."""

from serving.errors import ConfigError


def require_segmentation(config, command: str) -> None:
    """Refuse a config whose task is not segmentation: the training benchmark times the U-Net
    patch pipeline against a PyTorch U-Net (checked before TensorFlow loads).

    Raises:
        ConfigError: naming the task.
    """
    from kerasmed.tasks import training_task

    if not training_task(config.task).has_training_benchmark:
        raise ConfigError(
            f"`kerasmed {command}` measures a segmentation model's training (the U-Net patch "
            f"pipeline against a PyTorch U-Net); use a config with `task: segmentation`. "
            f"Received: task={config.task!r}"
        )
