import keras
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
