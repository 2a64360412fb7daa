"""`TF_CONFIG` checked without TensorFlow, the bounded wait for the other workers, the cap on local
workers, and workers that die with their launcher (issue 16, item 3). The one-line errors of the
installed command are in the bad-input corpus (tests/corpus/cluster_cases.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasmed.training import cluster
from kerasmed.training.launcher import WORKER_MEMORY, available_memory, check_local_workers, free_ports
from kerasmed.worker_processes import PARENT_ENV
from serving.errors import ConfigError
from tests.kerasmed.training.tiny_run import CONFIG, ROOT, tiny_overrides

KERASMED = Path(sys.executable).parent / "kerasmed"
GB = 2**30


def _env(addresses, index, kind="worker", **extra) -> dict:
    spec = {"cluster": {"worker": list(addresses)}, "task": {"type": kind, "index": index}}
    return {"TF_CONFIG": json.dumps(spec), **extra}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("localhost", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _no_held_port(monkeypatch):
    """Each test starts with no port held and no cluster seen (module state of `cluster`)."""
    cluster.release_own_port()
    monkeypatch.setattr(cluster, "_ready", None)
    yield
    cluster.release_own_port()


def test_tf_config_roles_and_what_counts_as_no_cluster():
    spec = {"cluster": {"chief": ["[::1]:2000"], "worker": ["a:2001", "b.example:2002"]},
            "task": {"type": "worker", "index": 1}, "environment": "cloud"}
    env = {"TF_CONFIG": json.dumps(spec)}
    assert cluster.read_tf_config(env) == spec
    assert cluster.num_workers(env) == 3 and cluster.task_id(env) == ("worker", 1)
    assert not cluster.is_chief(env)
    assert cluster.split_address("[::1]:2000") == ("::1", 2000)
    for empty in ({}, {"TF_CONFIG": " "}, {"TF_CONFIG": "{}"}, {"TF_CONFIG": '{"environment": "cloud"}'}):
        assert cluster.read_tf_config(empty) == {} and cluster.num_workers(empty) == 1
    with pytest.raises(ConfigError, match=r"task.index must be an integer from 0 to 1 .* Received: true$"):
        cluster.read_tf_config(_env(["a:1", "a:2"], True))


def test_peer_timeout_default_and_checks():
    assert cluster.peer_timeout({}) == cluster.DEFAULT_TIMEOUT == 300
    assert cluster.peer_timeout({"KERASMED_PEER_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "nan", "inf", "5s"):
        with pytest.raises(ConfigError, match=f"`KERASMED_PEER_TIMEOUT` must be a number of seconds > 0 "
                                              rf"\(default 300\). Received: '{bad}'"):
            cluster.peer_timeout({"KERASMED_PEER_TIMEOUT": bad})
    # Checked only where there is something to wait for.
    assert cluster.check_environment({"KERASMED_PEER_TIMEOUT": "5s"}) == {}


def test_the_timeout_names_every_missing_peer_and_frees_the_own_port():
    own, refused = free_ports(2)
    env = _env([f"localhost:{own}", f"localhost:{refused}", "nohost.invalid:2222"], 0,
               KERASMED_PEER_TIMEOUT="0.5")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        cluster.wait_for_peers(env)
    assert 0.5 <= time.monotonic() - start < 2.0
    assert str(info.value) == (
        f"`TF_CONFIG`: every other task must start within 0.5 s (`KERASMED_PEER_TIMEOUT`; this task is "
        f"worker 0 at localhost:{own}). Received: no answer from worker 1 at localhost:{refused} "
        f"(connection refused), worker 2 at nohost.invalid:2222 (host not found)")
    assert not _listening(own)  # released on the way out


def test_wait_returns_once_the_peer_listens_and_holds_the_own_port_until_released():
    own, peer = free_ports(2)
    env = _env([f"localhost:{own}", f"localhost:{peer}"], 0, KERASMED_PEER_TIMEOUT="10")
    with socket.create_server(("", peer)):
        start = time.monotonic()
        cluster.wait_for_peers(env)
        assert time.monotonic() - start < 1.0
    assert _listening(own)  # the other tasks see this one until TensorFlow takes the port
    cluster.wait_for_peers(env)  # seen already: returns at once, even with the peer gone
    cluster.release_own_port()
    assert not _listening(own)


def test_an_own_port_in_use_is_one_line():
    own, peer = free_ports(2)
    with socket.create_server(("", own)):
        with pytest.raises(ConfigError, match=rf"`TF_CONFIG` cluster.worker\[1\] is this task's address, so "
                                              rf"its port must be free on this host; it is not \(.*\)\. "
                                              rf'Received: "localhost:{own}"'):
            cluster.wait_for_peers(_env([f"localhost:{peer}", f"localhost:{own}"], 1))


# A stand-in worker: waits for its peers, says so, and holds its port (as TensorFlow's server will)
# until its stdin is closed.
WAIT = """
import sys
from kerasmed.training.cluster import wait_for_peers
wait_for_peers()
print("ready", flush=True)
sys.stdin.read()
"""


def test_two_workers_started_a_second_apart_both_see_each_other():
    addresses = [f"localhost:{port}" for port in free_ports(2)]
    procs = []
    try:
        for index in (0, 1):
            procs.append(subprocess.Popen([sys.executable, "-c", WAIT], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True,
                                          env={**os.environ, **_env(addresses, index)}))
            if index == 0:
                while not _listening(int(addresses[0].split(":")[1])):  # worker 0 waits, port open
                    assert procs[0].poll() is None
                    time.sleep(0.05)
                time.sleep(1.0)
                assert procs[0].poll() is None  # still waiting for worker 1
        started = time.monotonic()
        assert [p.stdout.readline() for p in procs] == ["ready\n", "ready\n"]
        assert time.monotonic() - started < 5.0
        assert [p.communicate("", timeout=30)[0] for p in procs] == ["", ""]
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
            p.communicate()


def test_one_worker_of_two_without_its_peer_times_out_or_stops_at_sigterm(tiny_data, tmp_path):
    """The acceptance test: `kerasmed train` as worker 0 of a two-worker `TF_CONFIG` whose worker 1
    never starts exits 2 with one line naming worker 1 once `KERASMED_PEER_TIMEOUT` (2 s) has
    passed, and a second such worker (timeout 600 s) sent SIGTERM while waiting exits at once with
    143. Before issue 16 both waited forever and ignored SIGTERM."""
    ports = free_ports(4)
    args = [str(KERASMED), "-q", "train", str(CONFIG), *(f"--set={o}" for o in tiny_overrides(tiny_data))]
    procs = {}
    for name, (own, peer), timeout in (("timeout", ports[:2], "2"), ("sigterm", ports[2:], "600")):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               **_env([f"localhost:{own}", f"localhost:{peer}"], 0, KERASMED_PEER_TIMEOUT=timeout)}
        procs[name] = (subprocess.Popen([*args, "--run-dir", str(tmp_path / f"run-{name}")],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                        env=env), own, peer)
    try:
        waiting = {}
        deadline = time.monotonic() + 120
        while len(waiting) < 2:  # the data is checked, the wait has begun: the own port is open
            for name, (proc, own, _) in procs.items():
                assert proc.poll() is None, proc.communicate()
                if name not in waiting and _listening(own):
                    waiting[name] = time.monotonic()
            assert time.monotonic() < deadline, "no worker began to wait"
            time.sleep(0.02)

        proc, own, _ = procs["sigterm"]
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        line = proc.stderr.readline()
        said, code = time.monotonic() - sent, proc.wait(timeout=30)
        ended = time.monotonic() - sent
        assert (code, line, proc.stderr.read()) == (143, "kerasmed train: terminated (SIGTERM)\n", "")
        assert said < 0.5 and ended < 3.0, (said, ended)  # then only the interpreter's teardown

        proc, own, peer = procs["timeout"]
        stdout, stderr = proc.communicate(timeout=30)
        waited = time.monotonic() - waiting["timeout"]
        assert proc.returncode == 2, stdout + stderr
        assert stderr == (f"kerasmed train: error: `TF_CONFIG`: every other task must start within 2 s "
                          f"(`KERASMED_PEER_TIMEOUT`; this task is worker 0 at localhost:{own}). Received: "
                          f"no answer from worker 1 at localhost:{peer} (connection refused)\n")
        assert 1.9 <= waited < 4.0, waited
    finally:
        for proc, _, _ in procs.values():
            proc.kill()
            proc.communicate()
    assert list(tmp_path.iterdir()) == []  # no run folder begun


def test_local_workers_are_capped_by_cpus_and_memory():
    with pytest.raises(ConfigError) as info:
        check_local_workers(64, cpus=2, memory=20 * GB)
    assert str(info.value) == ("`--workers` must be at most 2 on this machine: a worker per usable CPU (2 "
                               "here; 2 workers are always allowed) and 1 GB of available memory per "
                               "worker (20.0 GB here). Received: --workers 64")
    check_local_workers(2, cpus=1, memory=20 * GB)  # two are always allowed, to try a cluster
    check_local_workers(8, cpus=8, memory=8 * WORKER_MEMORY)
    with pytest.raises(ConfigError, match=r"at most 3 .*\(3.5 GB here\)\. Received: --workers 4$"):
        check_local_workers(4, cpus=8, memory=int(3.5 * GB))


def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory(meminfo, tmp_path / "no-cgroup") == 8_000_000 * 1024
    (tmp_path / "memory.max").write_text(f"{3 * GB}\n")
    (tmp_path / "memory.current").write_text(f"{GB}\n")
    assert available_memory(meminfo, tmp_path) == 2 * GB
    (tmp_path / "memory.max").write_text("max\n")
    assert available_memory(meminfo, tmp_path) == 8_000_000 * 1024
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_the_cli_has_itself_killed_when_its_launcher_is_gone():
    env = {**os.environ, PARENT_ENV: str(os.getpid())}  # this process is its parent: it runs
    assert subprocess.run([str(KERASMED), "--help"], env=env, capture_output=True).returncode == 0
    # A launcher that died before the worker could ask the kernel to be told: the worker stops.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env[PARENT_ENV] = str(gone.pid)
    out = subprocess.run([str(KERASMED), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL and out.stdout == ""
    assert out.stderr == (f"kerasmed: the launcher that started this worker (pid {gone.pid}, "
                          f"`{PARENT_ENV}`) is gone; stopping\n")
