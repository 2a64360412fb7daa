"""Worker processes that die with their parent, even when the parent is killed with SIGKILL.

A parent killed by `kill -9` runs no cleanup, so its workers must notice by themselves. On Linux
each worker asks the kernel, as soon as it starts, for a signal when its parent dies
(`prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread polls `os.getppid()` once a second. A
parent that died before the worker asked is caught by comparing `os.getppid()` with the parent's
pid, which the parent passes down.

- `kerasmed preprocess` workers (`kerasmed.data.cache`) get SIGTERM: their handler deletes the
  temporary folder of the case being written and exits. Once they are gone, the multiprocessing
  resource tracker (whose pipe they held open) sees end-of-file and exits too.
- `kerasmed train --workers N` workers (`kerasmed.training.launcher`) get SIGKILL, through the
  `KERASMED_PARENT_PID` environment variable that `kerasmed.cli.main` reads: a worker blocked in a
  collective op, waiting for a peer that is gone, would never run a SIGTERM handler. The run
  resumes from its last completed epoch, as after any `kill -9`.

The kernel sends the signal when the *thread* that started the worker ends, so workers must be
started from a thread that outlives them (the main thread, or the one that waits for them).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PARENT_ENV = "KERASMED_PARENT_PID"  # set by a launcher: kill this process when that parent dies
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _watch_parent(parent_pid: int, signum: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signum)


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Have this process receive `signum` when the process `parent_pid` (its parent) dies.

    Call it first thing in the worker. If the parent has already died (the worker now has another
    parent), `signum` is sent at once.

    Example:
        >>> ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),))
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
        except (OSError, AttributeError):  # no libc symbol `prctl` (e.g. a static interpreter)
            armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid, int(signum)), daemon=True,
                         name="kerasmed-parent-watch").start()
    if os.getppid() != parent_pid:  # the parent died before the kernel could be asked
        os.kill(os.getpid(), signum)


def die_with_launcher(environ=None) -> None:
    """In a process a launcher started with `KERASMED_PARENT_PID=<its pid>`: be killed (SIGKILL)
    when that launcher dies. The variable is removed, so processes started from here do not
    inherit it. Without the variable, nothing happens.
    """
    environ = os.environ if environ is None else environ
    raw = environ.pop(PARENT_ENV, "")
    if not raw.strip():
        return
    try:
        parent_pid = int(raw)
    except ValueError:
        return  # not set by a kerasmed launcher
    if os.getppid() != parent_pid:
        print(f"kerasmed: the launcher that started this worker (pid {parent_pid}, `{PARENT_ENV}`) "
              "is gone; stopping", file=sys.stderr, flush=True)
    die_with_parent(parent_pid, signal.SIGKILL)
