"""The local multi-worker launcher, with stand-in worker programs (no TensorFlow)."""

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from kerasmed.training.launcher import free_ports, launch_local_workers, worker_tf_config
from serving.errors import ConfigError
from tests.kerasmed.data.test_preprocess_orphans import children, kill_group, survivors

# A worker that prints its TF_CONFIG role, then exits with the code given for its index.
WORKER = """
import json, os, sys, time
spec = json.loads(os.environ["TF_CONFIG"])
index = spec["task"]["index"]
print("cluster", ",".join(spec["cluster"]["worker"]), "index", index)
print("to stderr", file=sys.stderr)
codes = [int(c) for c in sys.argv[1].split(",")]
if codes[index] < 0:
    time.sleep(120)  # a worker stuck waiting for a failed peer
sys.exit(max(codes[index], 0))
"""


def _launch(codes, grace=30.0):
    out, err = io.StringIO(), io.StringIO()
    code = launch_local_workers([codes], len(codes.split(",")), grace_seconds=grace, stdout=out,
                                stderr=err, command=[sys.executable, "-c", WORKER])
    return code, out.getvalue(), err.getvalue()


def test_workers_get_one_cluster_and_prefixed_output():
    code, out, err = _launch("0,0,0")
    assert code == 0
    lines = sorted(out.splitlines())
    assert [line.split("] ")[0] for line in lines] == ["[worker 0", "[worker 1", "[worker 2"]
    clusters = {line.split()[3] for line in lines}
    assert len(clusters) == 1 and len(clusters.pop().split(",")) == 3  # one cluster, 3 addresses
    assert [line.split()[-1] for line in lines] == ["0", "1", "2"]
    assert sorted(err.splitlines()) == [f"[worker {i}] to stderr" for i in range(3)]


def test_a_failing_worker_fails_the_launch_and_stops_the_others():
    code, out, _ = _launch("-1,3", grace=0.5)  # worker 1 fails; worker 0 would wait 120 s
    assert code == 3
    assert "[worker 0] cluster" in out and "[worker 1] cluster" in out


def test_tf_config_and_ports():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    spec = json.loads(worker_tf_config(["a:1", "b:2"], 1))
    assert spec == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ConfigError, match="workers=1"):
        launch_local_workers(["train"], 1)


# A launcher of two stand-in workers that, as `kerasmed.cli.main` does, read `KERASMED_PARENT_PID`.
STANDIN = """
import time
from kerasmed.worker_processes import die_with_launcher
die_with_launcher()
print("ready", flush=True)
time.sleep(120)
"""
LAUNCHER = f"""
import sys
from kerasmed.training.launcher import launch_local_workers
sys.exit(launch_local_workers([], 2, command=[sys.executable, "-c", {STANDIN!r}]))
"""


def test_workers_die_with_a_launcher_killed_by_sigkill():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        ready = sorted(launcher.stdout.readline() for _ in range(2))
        assert ready == ["[worker 0] ready\n", "[worker 1] ready\n"]
        workers = children(launcher.pid)
        assert len(workers) == 2 and None not in workers.values(), workers
        os.kill(launcher.pid, signal.SIGKILL)  # no cleanup of its own can run
        assert launcher.wait(timeout=30) == -signal.SIGKILL
        alive, seconds = survivors(workers, 10.0)
        assert not alive and seconds < 2.0, (alive, seconds)  # before issue 16: alive for 120 s
        assert launcher.stdout.read() == ""  # nothing holds the pipe any more
    finally:
        kill_group(launcher.pid)
        launcher.communicate()
