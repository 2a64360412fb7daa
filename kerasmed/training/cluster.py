"""`TF_CONFIG`, checked before TensorFlow starts, and the wait for the other workers (no TensorFlow).

`TF_CONFIG` is the standard TensorFlow cluster description, e.g. for the second of two workers::

    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 1}}

`read_tf_config` accepts a `cluster` mapping the task types kerasmed trains with (`chief`, at most
one, and `worker`) to non-empty lists of distinct "host:port" strings, and a `task` whose `type` is
a key of that cluster and whose `index` is an integer within its list. Anything else is a
`ConfigError` naming the key; TensorFlow itself would fail with a traceback, or (an index outside
the cluster) train a model that no process writes.

Start-up: `MultiWorkerMirroredStrategy()` waits, inside TensorFlow's C++ runtime, for every task
of the cluster: forever, and deaf to SIGTERM (a Python signal handler runs only between Python
bytecodes). So `wait_for_peers` waits first, in Python: it keeps this task's own port open (so the
others see it start) and connects to every other task's port until all answer, for at most
`KERASMED_PEER_TIMEOUT` seconds (default 300). A task that never starts is then named in one line,
and SIGTERM or Ctrl-C stops the wait at once (exit code 143 or 130). `release_own_port` hands the
port to TensorFlow just before the strategy is created.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time

from serving.errors import ConfigError

TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy trains with
TIMEOUT_ENV = "KERASMED_PEER_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds: time for every task to import TensorFlow and check its data
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):(?P<port>[0-9]{1,5})")
_CLUSTER = '`TF_CONFIG` cluster must be a mapping of task type to a list of "host:port" strings'

_held: socket.socket | None = None  # this task's port, open while `wait_for_peers` waits
_ready: str | None = None  # the TF_CONFIG whose peers have all been seen


def _shown(value) -> str:
    """`value` as JSON (a string in double quotes, so "1" and 1 differ), cut to 120 characters."""
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def split_address(address: str) -> tuple[str, int] | None:
    """`(host, port)` of a "host:port" string (an IPv6 host in brackets), or None if it is none."""
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        return None
    return match["host"].strip("[]"), int(match["port"])


def _check_cluster(cluster) -> None:
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{_CLUSTER}, e.g. {{\"worker\": [\"host1:2222\", \"host2:2222\"]}}. "
                          f"Received: {_shown(cluster)}")
    seen: dict[str, str] = {}
    for kind, addresses in cluster.items():
        if kind not in TASK_TYPES:
            raise ConfigError(f"`TF_CONFIG` cluster keys must be task types among {list(TASK_TYPES)} "
                              f"(kerasmed trains with MultiWorkerMirroredStrategy). Received: {_shown(kind)}")
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(f"{_CLUSTER}: cluster.{kind} is not a non-empty list. "
                              f"Received: {_shown(addresses)}")
        if kind == "chief" and len(addresses) > 1:
            raise ConfigError("`TF_CONFIG` cluster.chief must list one address. "
                              f"Received: {_shown(addresses)}")
        for i, address in enumerate(addresses):
            key = f"cluster.{kind}[{i}]"
            if split_address(address) is None:
                raise ConfigError(f'`TF_CONFIG` {key} must be a "host:port" string with a port from 1 to '
                                  f"65535. Received: {_shown(address)}")
            if address in seen:
                raise ConfigError(f"`TF_CONFIG` {key} must differ from every other task's address; "
                                  f"{seen[address]} has it too. Received: {_shown(address)}")
            seen[address] = key


def _check_task(task, cluster: dict) -> None:
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError("`TF_CONFIG` task must be a mapping with `type` and `index`, e.g. "
                          f'{{"type": "worker", "index": 0}}. Received: {_shown(task)}')
    kind, index = task["type"], task["index"]
    if not isinstance(kind, str) or kind not in cluster:
        raise ConfigError(f"`TF_CONFIG` task.type must be a task type of the cluster, one of "
                          f"{list(cluster)}. Received: {_shown(kind)}")
    count = len(cluster[kind])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ConfigError(f"`TF_CONFIG` task.index must be an integer from 0 to {count - 1} "
                          f"(cluster.{kind} lists {count} address{'es' if count > 1 else ''}). "
                          f"Received: {_shown(index)}")


def read_tf_config(environ=None) -> dict:
    """The parsed and checked `TF_CONFIG` environment variable; `{}` when it is unset, empty or
    names neither a cluster nor a task.

    Raises:
        ConfigError: naming the key, if `TF_CONFIG` is not JSON, not an object, or its `cluster`
            or `task` is not as described in the module docstring.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"`TF_CONFIG` must be a JSON object; it is not valid JSON ({err.msg} at "
                          f"character {err.pos}). Received: TF_CONFIG={shown}") from err
    if not isinstance(spec, dict):
        raise ConfigError(f"`TF_CONFIG` must be a JSON object. Received: TF_CONFIG={shown}")
    if "cluster" not in spec and "task" not in spec:
        return {}
    _check_cluster(spec.get("cluster"))
    _check_task(spec.get("task"), spec["cluster"])
    return spec


def num_workers(environ=None) -> int:
    """How many training processes `TF_CONFIG` describes (chief included); 1 without it."""
    cluster = read_tf_config(environ).get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def task_id(environ=None) -> tuple[str, int]:
    """This process's `(task type, index)`; `("worker", 0)` without `TF_CONFIG`."""
    task = read_tf_config(environ).get("task", {})
    return str(task.get("type", "worker")), int(task.get("index", 0))


def is_chief(environ=None) -> bool:
    """Whether this process writes the run folder: the `chief` task, else worker 0."""
    kind, index = task_id(environ)
    if kind == "chief":
        return True
    has_chief = bool(read_tf_config(environ).get("cluster", {}).get("chief"))
    return kind == "worker" and index == 0 and not has_chief


def peer_timeout(environ=None) -> float:
    """Seconds `wait_for_peers` waits: `KERASMED_PEER_TIMEOUT`, default 300.

    Raises:
        ConfigError: if the variable is set to anything but a number of seconds > 0.
    """
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"`{TIMEOUT_ENV}` must be a number of seconds > 0 (default "
                          f"{DEFAULT_TIMEOUT:g}). Received: {raw!r}")
    return seconds


def check_environment(environ=None) -> dict:
    """`read_tf_config`, and `peer_timeout` when the cluster has several tasks: every setting of
    the multi-worker start-up checked, before anything is read or TensorFlow imported."""
    spec = read_tf_config(environ)
    if num_workers(environ) > 1:
        peer_timeout(environ)
    return spec


def _hold_port(address: str, key: str) -> socket.socket:
    """A socket listening on this task's port on every interface, as TensorFlow's server will."""
    port = split_address(address)[1]
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    except OSError as err:
        raise ConfigError(f"`TF_CONFIG` {key} is this task's address, so its port must be free on "
                          f"this host; it is not ({err.strerror}). Received: {_shown(address)}") from err


def _probe(address: str, seconds: float) -> str | None:
    """None if a connection to `address` succeeds within `seconds`, else the reason it did not."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=max(0.05, seconds)):
            return None
    except socket.gaierror:
        return "host not found"
    except TimeoutError:
        return "no answer"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as err:
        return err.strerror or type(err).__name__


def release_own_port() -> None:
    """Close this task's port (held by `wait_for_peers`) so that TensorFlow's server can bind it."""
    global _held
    if _held is not None:
        _held.close()
        _held = None


def wait_for_peers(environ=None, interval: float = 0.25) -> None:
    """Wait until every other task of `TF_CONFIG` accepts a connection on its port.

    Does nothing without a cluster of several tasks, or once the peers of this `TF_CONFIG` have
    been seen. Holds this task's own port open meanwhile and afterwards, until `release_own_port`.

    Raises:
        ConfigError: naming every task that did not answer within `KERASMED_PEER_TIMEOUT` seconds,
            or if this task's own port is taken on this host.
    """
    global _held, _ready
    environ = os.environ if environ is None else environ
    spec = check_environment(environ)
    if num_workers(environ) <= 1 or _ready == environ.get("TF_CONFIG"):
        return
    timeout = peer_timeout(environ)
    kind, index = task_id(environ)
    own = spec["cluster"][kind][index]
    if _held is None:
        _held = _hold_port(own, f"cluster.{kind}[{index}]")
    waiting = {f"{k} {i}": address for k in TASK_TYPES for i, address in enumerate(spec["cluster"].get(k, []))
               if (k, i) != (kind, index)}
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            for name, address in list(waiting.items()):
                reason = _probe(address, min(1.0, deadline - time.monotonic()))
                if reason is None:
                    del waiting[name]
                else:
                    reasons[name] = reason
            if not waiting:
                break
            if time.monotonic() >= deadline:
                missing = ", ".join(f"{name} at {address} ({reasons[name]})"
                                    for name, address in waiting.items())
                raise ConfigError(f"`TF_CONFIG`: every other task must start within {timeout:g} s "
                                  f"(`{TIMEOUT_ENV}`; this task is {kind} {index} at {own}). "
                                  f"Received: no answer from {missing}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    except BaseException:
        release_own_port()
        raise
    _ready = environ.get("TF_CONFIG")

