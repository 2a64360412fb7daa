import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasmed.training import strategy as st
from serving.errors import ConfigError


def test_default_strategy_on_cpu():
    if tf.config.list_physical_devices("GPU"):
        pytest.fail("this test documents the CPU path; run it on a machine without a GPU")
    s = st.select_strategy()
    assert s.num_replicas_in_sync == 1
    assert not isinstance(s, tf.distribute.MirroredStrategy)


def test_precision_resolution(monkeypatch):
    assert st.resolve_precision("float32") == "float32"
    assert st.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(st.tf.config, "list_physical_devices", lambda kind=None: ["gpu0"])
    assert st.resolve_precision("auto") == "mixed_float16"
    monkeypatch.setattr(st.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(st, "cpu_supports_bfloat16", lambda: True)
    assert st.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(st, "cpu_supports_bfloat16", lambda: False)
    assert st.resolve_precision("auto") == "float32"
    with pytest.raises(ConfigError, match="mixed_precision"):
        st.resolve_precision("fp8")


def test_mirrored_strategy_when_several_gpus(monkeypatch):
    made = []
    monkeypatch.setattr(st.tf.config, "list_physical_devices", lambda kind=None: ["g0", "g1"])
    monkeypatch.setattr(st.tf.distribute, "MirroredStrategy", lambda: made.append(1) or "mirrored")
    assert st.select_strategy() == "mirrored" and made == [1]


def test_apply_precision_sets_global_policy():
    try:
        assert st.apply_precision("mixed_bfloat16") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _tf_config(workers, index, kind="worker", chief=False):
    cluster = {"worker": [f"localhost:{2000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["localhost:1999"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}


def test_tf_config_roles():
    assert st.num_workers({}) == 1 and st.is_chief({}) and st.task_id({}) == ("worker", 0)
    assert st.num_workers(_tf_config(3, 0)) == 3
    assert st.is_chief(_tf_config(3, 0)) and not st.is_chief(_tf_config(3, 2))
    assert st.task_id(_tf_config(3, 2)) == ("worker", 2)
    # With an explicit chief task, worker 0 is an ordinary worker.
    assert st.num_workers(_tf_config(2, 0, chief=True)) == 3
    assert not st.is_chief(_tf_config(2, 0, chief=True))
    assert st.is_chief(_tf_config(2, 0, kind="chief", chief=True))
    with pytest.raises(ConfigError, match="TF_CONFIG.*Received"):
        st.read_tf_config({"TF_CONFIG": "{not json"})
    with pytest.raises(ConfigError, match=r"`TF_CONFIG` task.index must be an integer from 0 to 2 "):
        st.task_id(_tf_config(3, 3))  # outside the cluster: trained, wrote nothing, exit 0 before


def test_multi_worker_strategy_when_tf_config_names_several_workers(monkeypatch):
    made = []
    monkeypatch.setenv("TF_CONFIG", _tf_config(2, 1)["TF_CONFIG"])
    # First the wait for the other workers (in Python, bounded, SIGTERM heard), then the port is
    # handed over to TensorFlow, then the strategy (whose own wait is endless and deaf to SIGTERM).
    monkeypatch.setattr(st.cluster, "wait_for_peers", lambda: made.append("wait"))
    monkeypatch.setattr(st.cluster, "release_own_port", lambda: made.append("release"))
    monkeypatch.setattr(st.tf.distribute, "MultiWorkerMirroredStrategy", lambda: made.append(1) or "mwms")
    assert st.select_strategy() == "mwms" and made == ["wait", "release", 1]
    monkeypatch.setenv("TF_CONFIG", _tf_config(1, 0)["TF_CONFIG"])  # one worker: nothing to mirror
    assert st.select_strategy() is tf.distribute.get_strategy()


def test_seeded_switches_op_determinism_on_and_back_off():
    assert not st.op_determinism_enabled()
    with st.seeded(3, deterministic=True):
        assert st.op_determinism_enabled()
        a = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy()
    assert not st.op_determinism_enabled()
    with st.seeded(3):
        assert not st.op_determinism_enabled()
        b = keras.random.uniform((3,), seed=keras.random.SeedGenerator(1)).numpy()
    np.testing.assert_array_equal(a, b)
