"""`kerasmed preprocess` killed with SIGKILL leaves no worker process behind (issue 16, item 3)."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.kerasmed.data.test_cache import _dataset
from tests.kerasmed.data.test_preprocess_command import KERASMED, _args, _ctrl_c_default, _finished


def start_time(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat, which tells a reused pid
    apart), or None once it is gone or a zombie (dead, not yet reaped by its new parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def children(pid: int) -> dict[int, str | None]:
    """`{pid: start time}` of the running children of process `pid`."""
    pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return {p: start_time(p) for p in pids}


def survivors(processes: dict[int, str | None], seconds: float) -> tuple[list[int], float]:
    """The processes still running after up to `seconds`, and how long it took them to end."""
    start = time.monotonic()
    alive = sorted(processes)
    while alive and time.monotonic() - start < seconds:
        time.sleep(0.05)
        alive = [p for p in alive if processes[p] is not None and start_time(p) == processes[p]]
    return alive, time.monotonic() - start


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (a failed test must not leave processes behind)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_sigkill_of_preprocess_leaves_no_worker_and_no_resource_tracker(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data, n=50, shape=(8, 48, 48), square=22)  # about 0.3 s of work left at the kill
    cache = tmp_path / "cache"
    proc = subprocess.Popen([str(KERASMED), "-q", *map(str, _args(data, cache, "--workers", "2"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_ctrl_c_default)
    try:
        deadline = time.monotonic() + 120
        while len(_finished(cache)) < 3:  # the resource tracker and both workers are running
            assert proc.poll() is None, proc.returncode
            assert time.monotonic() < deadline, "no case was finished in time"
            time.sleep(0.002)
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as `kill -9 PID` does
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert len(workers) == 3 and None not in workers.values(), workers  # 2 workers, the tracker
        alive, seconds = survivors(workers, 10.0)
        assert not alive, f"still running {seconds:.1f} s after the parent was killed: {alive}"
        assert seconds < 5.0
    finally:
        kill_group(proc.pid)  # start_new_session: the group is the parent's pid
        proc.wait()
    assert 3 <= len(_finished(cache)) < 50
    assert not list(cache.glob("*/cases/.*"))  # the workers deleted the case they were writing
