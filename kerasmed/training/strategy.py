"""Device strategy and mixed precision: GPU paths switch on when a GPU is present."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import tensorflow as tf

from serving.errors import ConfigError

log = logging.getLogger(__name__)
POLICIES = ("float32", "auto", "mixed_float16", "mixed_bfloat16")


def select_strategy() -> tf.distribute.Strategy:
    """`MirroredStrategy` over all GPUs when there are several, else the default strategy."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def cpu_supports_bfloat16() -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str) -> str:
    """Map a config value to a Keras dtype policy name.

    "auto" gives `mixed_float16` on a GPU, `mixed_bfloat16` on a CPU with native bfloat16,
    `float32` otherwise.
    """
    if setting not in POLICIES:
        raise ConfigError(
            f"`training.mixed_precision` must be one of {POLICIES}. Received: {setting!r}"
        )
    if setting != "auto":
        return setting
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"


def apply_precision(setting: str) -> str:
    """Set the global Keras dtype policy; returns the policy name used."""
    policy = resolve_precision(setting)
    keras.mixed_precision.set_global_policy(policy)
    log.info("dtype policy: %s", policy)
    return policy
