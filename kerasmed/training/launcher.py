"""`kerasmed train CONFIG --workers N`: N training processes on this host, one strategy across them.

Each worker is `python -m kerasmed.cli train CONFIG ...` with a `TF_CONFIG` naming all N workers on
free localhost ports and its own index, so `select_strategy()` gives it a
`MultiWorkerMirroredStrategy`. Worker 0 is the chief and alone writes the run folder. Output is
forwarded line by line with a `[worker i] ` prefix. If a worker fails, the others (which would
wait for it forever in collective ops) are stopped after a grace period; the launcher returns the
first failing worker's exit code, or 0.

The same `TF_CONFIG` scheme runs workers on several hosts (start one process per host with its
index); the run folder must then be on a filesystem all workers share, since non-chief workers
resume from the chief's backup.

Limits: `check_local_workers` refuses more workers than the CPUs this process may use (two are
always allowed, so that a multi-worker run can be tried anywhere) or than fit in the available
memory at `WORKER_MEMORY` each. It refuses rather than starts fewer: `sampling.batch_size` is per
replica, so fewer workers would silently train with a smaller global batch than asked for.
The workers are killed when the launcher dies, even by SIGKILL (`kerasmed.worker_processes`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from kerasmed.worker_processes import PARENT_ENV
from serving.errors import ConfigError
from serving.runners.threads import usable_cpu_count

# Memory one local TensorFlow training worker is allowed for: TensorFlow alone takes about 0.2 GB
# per process, the model, optimizer, tf.data buffers and memory-mapped cache the rest.
WORKER_MEMORY = 1 << 30


def available_memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory new processes may still use: the kernel's `MemAvailable`, capped by what a
    cgroup v2 memory limit (`docker --memory`, Kubernetes limits) leaves; None where unknown."""
    found = []
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", Path(meminfo).read_text(), re.M)
        if match:
            found.append(int(match[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path(cgroup, "memory.max").read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int(Path(cgroup, "memory.current").read_text())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_local_workers(workers: int, cpus: int | None = None, memory: int | None = None) -> None:
    """Refuse more local workers than this machine can run (see the module docstring).

    Args:
        workers: the `--workers` asked for.
        cpus: usable CPUs; default `usable_cpu_count()`.
        memory: available bytes; default `available_memory()` (no memory limit where unknown).

    Raises:
        ConfigError: naming the limit, the CPUs and the memory.
    """
    cpus = usable_cpu_count() if cpus is None else cpus
    memory = available_memory() if memory is None else memory
    limit = max(2, cpus)
    if memory is not None:
        limit = min(limit, memory // WORKER_MEMORY)
    if workers > limit:
        memory_note = "" if memory is None else (f" and {WORKER_MEMORY / 2**30:g} GB of available memory "
                                                 f"per worker ({memory / 2**30:.1f} GB here)")
        raise ConfigError(f"`--workers` must be at most {limit} on this machine: a worker per usable CPU "
                          f"({cpus} here; 2 workers are always allowed){memory_note}. "
                          f"Received: --workers {workers}")


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """`count` distinct TCP ports that are free on `host` right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_tf_config(addresses: Sequence[str], index: int) -> str:
    """The `TF_CONFIG` JSON of worker `index` in a cluster of `addresses` (`host:port`)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def _forward(stream, out: TextIO, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
            out.flush()
    stream.close()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


def launch_local_workers(
    args: Sequence[str],
    workers: int,
    host: str = "localhost",
    grace_seconds: float = 30.0,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    command: Sequence[str] | None = None,
) -> int:
    """Run `python -m kerasmed.cli *args` as `workers` cooperating processes; returns an exit code.

    Args:
        args: the CLI arguments of one worker, e.g. `["train", "config.yaml", "--set", "k=v"]`.
        workers: number of processes (>= 2).
        host: address the workers listen on.
        grace_seconds: how long the others may still run once one worker has failed.
        stdout: where worker stdout goes (default `sys.stdout`), prefixed `[worker i] `.
        stderr: where worker stderr goes (default `sys.stderr`), prefixed likewise.
        command: the program each worker runs before `args`; default
            `[sys.executable, "-m", "kerasmed.cli"]`.

    Returns:
        0 if every worker succeeded, else the exit code of the first worker that failed.

    Raises:
        ConfigError: if `workers` < 2. (`kerasmed train` also refuses more workers than the machine
            can run, with `check_local_workers`, before it reads anything.)
    """
    if workers < 2:
        raise ConfigError(f"The launcher needs at least 2 workers. Received: workers={workers}")
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    command = list(command or [sys.executable, "-m", "kerasmed.cli"])
    addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    first_failure: int | None = None
    failed_at = None
    try:
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": worker_tf_config(addresses, index), "PYTHONUNBUFFERED": "1",
                   PARENT_ENV: str(os.getpid())}  # the CLI has itself killed when this process dies
            proc = subprocess.Popen(
                [*command, *args], env=env, text=True, bufsize=1,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            procs.append(proc)
            for stream, out in ((proc.stdout, stdout), (proc.stderr, stderr)):
                thread = threading.Thread(target=_forward, args=(stream, out, f"[worker {index}] ", lock),
                                          daemon=True)
                thread.start()
                threads.append(thread)
        while True:
            codes = [p.poll() for p in procs]  # every one, so each failure is seen when it happens
            for code in codes:
                if code is not None and code != 0 and first_failure is None:
                    first_failure, failed_at = _exit_code(code), time.monotonic()
            if all(code is not None for code in codes):
                break
            if failed_at is not None and time.monotonic() - failed_at > grace_seconds:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for thread in threads:
            thread.join(timeout=5)
    if first_failure is None:
        first_failure = next((_exit_code(p.returncode) for p in procs if p.returncode != 0), None)
    return first_failure or 0
