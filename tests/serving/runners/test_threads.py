"""serving.runners.threads: default thread counts follow the CPUs this process may use."""

import os

import pytest

from serving.errors import ConfigError
from serving.runners import threads
from serving.runners.threads import resolve_num_threads, usable_cpu_count


def test_usable_cpu_count_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cpu_count() == 3


def test_usable_cpu_count_is_capped_by_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: 2)
    assert usable_cpu_count() == 2


@pytest.mark.parametrize(
    "text, expected",
    [("150000 100000\n", 2), ("50000 100000", 1), ("max 100000\n", None), ("junk", None)],
)
def test_cgroup_cpu_limit(tmp_path, text, expected):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert threads._cgroup_cpu_limit(str(path)) == expected
    assert threads._cgroup_cpu_limit(str(tmp_path / "missing")) is None


def test_usable_cpu_count_without_an_affinity_api(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpu_count() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert usable_cpu_count() == 1


def test_resolve_num_threads(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpu_count", lambda: 4)
    assert resolve_num_threads(None, "num_threads") == 4
    assert resolve_num_threads(1, "num_threads") == 1
    assert resolve_num_threads(3.0, "num_threads") == 3
    for bad in (0, -2, 1.5, True, "two"):
        with pytest.raises(ConfigError, match=r"positive integer\. Received: num_threads="):
            resolve_num_threads(bad, "num_threads")
