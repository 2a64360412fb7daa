"""Corpus cases: the cluster (issue 16, item 3): `TF_CONFIG`, the wait for the other workers and
`--workers N`. Every one fails before TensorFlow is imported, in the installed `kerasmed`."""

from __future__ import annotations

import json
import socket

from kerasmed.training.launcher import free_ports
from tests.corpus.harness import CONFIG, Cli, Work, case


def _tf_config(cluster, task) -> str:
    return json.dumps({"cluster": cluster, "task": task})


TWO = {"worker": ["localhost:47001", "localhost:47002"]}
W0 = {"type": "worker", "index": 0}

TF_CONFIG_CASES = [
    # (id, TF_CONFIG, needles)
    ("tf-config-not-json", '{"cluster": {"worker": ["localhost:47001"]}, "task": ',
     ("`TF_CONFIG` must be a JSON object; it is not valid JSON", "Expecting value at character",
      'Received: TF_CONFIG={"cluster"')),
    ("tf-config-a-list", '["localhost:47001"]',
     ("`TF_CONFIG` must be a JSON object", "Received: TF_CONFIG=[")),
    ("tf-config-cluster-a-list", _tf_config(["localhost:47001", "localhost:47002"], W0),
     ('`TF_CONFIG` cluster must be a mapping of task type to a list of "host:port" strings',
      'Received: ["localhost:47001", "localhost:47002"]')),
    ("tf-config-cluster-worker-a-string", _tf_config({"worker": "localhost:47001"}, W0),
     ("cluster.worker is not a non-empty list", 'Received: "localhost:47001"')),
    ("tf-config-address-without-port", _tf_config({"worker": ["localhost", "localhost:47002"]}, W0),
     ('`TF_CONFIG` cluster.worker[0] must be a "host:port" string', 'Received: "localhost"')),
    ("tf-config-port-out-of-range", _tf_config({"worker": ["localhost:70000"]}, W0),
     ("cluster.worker[0]", "a port from 1 to 65535", 'Received: "localhost:70000"')),
    ("tf-config-address-twice", _tf_config({"worker": ["localhost:47001", "localhost:47001"]}, W0),
     ("`TF_CONFIG` cluster.worker[1] must differ from every other task's address", "cluster.worker[0]")),
    ("tf-config-ps-task", _tf_config({"worker": ["localhost:47001"], "ps": ["localhost:47002"]}, W0),
     ("`TF_CONFIG` cluster keys must be task types among ['chief', 'worker']", 'Received: "ps"')),
    ("tf-config-two-chiefs", _tf_config({"chief": ["localhost:47000", "localhost:47003"], **TWO},
                                        {"type": "chief", "index": 0}),
     ("`TF_CONFIG` cluster.chief must list one address", "Received: [")),
    ("tf-config-no-task", json.dumps({"cluster": TWO}),
     ("`TF_CONFIG` task must be a mapping with `type` and `index`", "Received: null")),
    ("tf-config-task-type-not-in-cluster", _tf_config(TWO, {"type": "chief", "index": 0}),
     ("`TF_CONFIG` task.type must be a task type of the cluster, one of ['worker']", 'Received: "chief"')),
    ("tf-config-index-a-string", _tf_config(TWO, {"type": "worker", "index": "1"}),
     ("`TF_CONFIG` task.index must be an integer from 0 to 1", "cluster.worker lists 2 addresses",
      'Received: "1"')),
    # Trained, wrote nothing and exited 0 before issue 16.
    ("tf-config-index-outside-the-cluster", _tf_config(TWO, {"type": "worker", "index": 2}),
     ("`TF_CONFIG` task.index must be an integer from 0 to 1", "Received: 2")),
    ("tf-config-index-negative", _tf_config(TWO, {"type": "worker", "index": -1}),
     ("`TF_CONFIG` task.index must be an integer from 0 to 1", "Received: -1")),
]


def _tf_config_case(tf_config: str, needles, w: Work) -> Cli:
    w.env("TF_CONFIG", tf_config)
    return Cli(("train", CONFIG, "--run-dir", w.path / "run"), ("kerasmed train: error:", *needles))


for _id, _tf, _needles in TF_CONFIG_CASES:
    case(f"cluster/{_id}")(lambda w, _tf=_tf, _needles=_needles: _tf_config_case(_tf, _needles, w))


@case("cluster/peer-timeout-not-a-number")
def _(w: Work) -> Cli:
    w.env("TF_CONFIG", _tf_config(TWO, W0))
    w.env("KERASMED_PEER_TIMEOUT", "soon")
    return Cli(("train", CONFIG, "--run-dir", w.path / "run"),
               ("`KERASMED_PEER_TIMEOUT` must be a number of seconds > 0", "Received: 'soon'"))


@case("cluster/workers-beyond-cpus-and-memory")
def _(w: Work) -> Cli:
    # Started 4096 TensorFlow processes before issue 16 (64 took 11 GB on 2 CPUs).
    return Cli(("train", CONFIG, "--workers", "4096", "--run-dir", w.path / "run"),
               ("`--workers` must be at most", "a worker per usable CPU", "GB of available memory per worker",
                "Received: --workers 4096"))


def _two_workers(w: Work, timeout: str) -> tuple[str, str]:
    """A config on a copy of the corpus data, and `TF_CONFIG` of worker 0 of two on free ports
    (nothing listens on worker 1's)."""
    config = w.config({"data": {"root": str(w.data())}})
    own, peer = (f"localhost:{port}" for port in free_ports(2))
    w.env("TF_CONFIG", _tf_config({"worker": [own, peer]}, W0))
    w.env("KERASMED_PEER_TIMEOUT", timeout)
    return str(config), own


@case("cluster/peer-never-starts")
def _(w: Work) -> Cli:
    # Waited forever (deaf to SIGTERM) before issue 16.
    config, own = _two_workers(w, "2")
    return Cli(("train", config, "--run-dir", w.path / "run"),
               ("`TF_CONFIG`: every other task must start within 2 s (`KERASMED_PEER_TIMEOUT`",
                f"this task is worker 0 at {own}", "Received: no answer from worker 1 at localhost:",
                "(connection refused)"))


def _listening(address: str) -> bool:
    host, port = address.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


@case("cluster/sigterm-while-waiting-for-a-peer")
def _(w: Work) -> Cli:
    config, own = _two_workers(w, "600")
    return Cli(("train", config, "--run-dir", w.path / "run"), ("kerasmed train: terminated (SIGTERM)",),
               code=143, terminate_when=lambda: _listening(own))  # worker 0 waits, its port open
