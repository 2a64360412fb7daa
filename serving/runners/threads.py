"""How many CPU threads a runner uses by default, and the check of an explicit thread count.

LiteRT runs on one thread unless told otherwise, and onnxruntime sizes its pool from the machine's
cores, not from the CPUs this process may use (a container, a CPU quota or `taskset` can allow
fewer, and more threads than CPUs only wait for each other).
Runners therefore default to `usable_cpu_count()` threads and report the count they use.
"""

from __future__ import annotations

import math
import operator
import os

from serving.errors import ConfigError

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def _cgroup_cpu_limit(path: str = CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 CPU quota (`docker --cpus`, Kubernetes limits), rounded up.

    Returns:
        None when there is no quota, or no cgroup v2 file to read it from.
    """
    try:
        with open(path, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpu_count() -> int:
    """CPUs this process may run on: its CPU affinity mask where the OS has one, else all CPUs,
    capped by a cgroup v2 CPU quota when there is one.

    Returns:
        At least 1.

    Example:
        >>> usable_cpu_count()   # on a 2-core machine, or under `taskset -c 0,1`
        2
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def resolve_num_threads(value: int | None, name: str) -> int:
    """An explicit thread count, checked, or `usable_cpu_count()` for None.

    Args:
        value: threads asked for, or None for the default.
        name: the argument's name, for the error message.

    Returns:
        A positive thread count.

    Raises:
        ConfigError: if `value` is not a positive integer.
    """
    if value is None:
        return usable_cpu_count()
    whole = isinstance(value, float) and value.is_integer()
    try:
        count = int(value) if whole else operator.index(value)  # ints, numpy ints, 2.0
    except TypeError:
        count = 0
    if isinstance(value, bool) or count < 1:
        raise ConfigError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return count
