"""Device strategy, worker roles, determinism and mixed precision.

Strategy choice, in order:
- `TF_CONFIG` names several workers: `MultiWorkerMirroredStrategy` (one replica per local device of
  each worker; `kerasmed train --workers N` sets `TF_CONFIG` up for N processes on one host);
- several GPUs: `MirroredStrategy`;
- otherwise the default strategy.

`TF_CONFIG` is the standard TensorFlow cluster description, e.g. for the second of two workers::

    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 1}}

Worker 0 is the chief unless the cluster has an explicit `chief` task; only the chief writes the
run folder. `TF_CONFIG` is read and checked without TensorFlow, and the wait for the other tasks
(`KERASMED_PEER_TIMEOUT`) done, in `kerasmed.training.cluster`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from kerasmed.training import cluster
from kerasmed.training.cluster import is_chief, num_workers, read_tf_config, task_id  # noqa: F401
from serving.errors import ConfigError

log = logging.getLogger(__name__)
POLICIES = ("float32", "auto", "mixed_float16", "mixed_bfloat16")


def select_strategy() -> tf.distribute.Strategy:
    """The distribution strategy for this process (see the module docstring).

    Call it before any other TensorFlow work: `MultiWorkerMirroredStrategy` configures the
    collective-ops runtime, which is impossible once TensorFlow has created its devices.
    """
    if num_workers() > 1:
        # TensorFlow's own wait for the other tasks is endless and deaf to SIGTERM: wait here first
        # (`KERASMED_PEER_TIMEOUT`; the CLI already has, before importing TensorFlow).
        cluster.wait_for_peers()
        cluster.release_own_port()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans several processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and num_workers() > 1


def _set_op_determinism(enabled: bool) -> None:
    if enabled:
        tf.config.experimental.enable_op_determinism()
        return
    # TensorFlow exports only the switch-on; the switch-off is the same flag, not yet public.
    from tensorflow.python.framework import config as tf_framework_config

    disable = getattr(tf_framework_config, "disable_op_determinism", None)
    if disable is not None:
        disable()


def op_determinism_enabled() -> bool:
    from tensorflow.python.framework import config as tf_framework_config

    check = getattr(tf_framework_config, "is_op_determinism_enabled", None)
    return bool(check()) if check is not None else False


@contextlib.contextmanager
def seeded(seed: int, deterministic: bool = False) -> Iterator[None]:
    """Seed Python, NumPy, TensorFlow and Keras; with `deterministic`, also run TF ops deterministically.

    Op determinism (`tf.config.experimental.enable_op_determinism`) makes kernels pick
    reproducible algorithms and tf.data keep its order, so two runs of one config on one machine
    give bit-identical weights. It is process-wide, so it is switched back off on exit when it was
    off on entry.

    Example:
        >>> with seeded(0, deterministic=True):
        ...     model.fit(...)
    """
    was_enabled = op_determinism_enabled()
    keras.utils.set_random_seed(seed)
    if deterministic and not was_enabled:
        _set_op_determinism(True)
    try:
        yield
    finally:
        if deterministic and not was_enabled:
            _set_op_determinism(False)


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
