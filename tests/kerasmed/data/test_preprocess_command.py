"""`kerasmed preprocess`: parallel, resumable after any stop, never a half-written case."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kerasmed.data.cache as cache_module
import kerasmed.training.inputs as inputs_module
from kerasmed.cli import main
from kerasmed.data.cache import load_cache
from tests.helpers import assert_one_line_error, kerasmed_process
from tests.kerasmed.data.test_cache import _dataset, _write_case

REPO = Path(__file__).resolve().parents[3]
KERASMED = Path(sys.executable).parent / "kerasmed"
# 48 x 48 slices at 1 mm to 0.25 mm, cropped to the central 64 x 64 (16 mm), which holds the 4 x 4
# mm mask square from 22 mm on: about 10 ms of work per case.
SETS = ("--set", "preprocessing.target_spacing=[null,0.25,0.25]",
        "--set", "preprocessing.size=[null,64,64]")


def _ctrl_c_default() -> None:
    """A terminal's foreground job takes Ctrl-C; a test run as a background shell job (`cmd &`)
    inherits SIGINT ignored, and so would the command it starts. Start it as the terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _args(data, cache, *extra):
    return ("preprocess", REPO / "configs" / "lung_nodule_seg_2d.yaml", "--set", f"data.root={data}",
            "--set", f"data.cache_dir={cache}", *SETS, *extra)


def _finished(cache) -> dict[str, int]:
    """`{case folder name: inode}` of the case folders under their final names."""
    return {p.name: p.stat().st_ino for p in cache.glob("*/cases/*") if not p.name.startswith(".")}


def _check_complete(cache) -> None:
    """Every case folder under its final name holds whole arrays and its meta."""
    for folder in cache.glob("*/cases/[0-9a-f]*"):
        meta = cache_module._finished_meta(folder)
        assert meta is not None, sorted(p.name for p in folder.iterdir())
        assert np.load(folder / "image.npy").shape == tuple(meta["output_shape"]) == (8, 64, 64)
        assert np.load(folder / "mask.npy").sum() == meta["foreground_voxels"] == 256  # 4x4 mm, 16x16


@pytest.fixture(scope="module")
def many_cases(tmp_path_factory):
    """100 small NIfTI cases (8 x 48 x 48), enough for a stop to land mid-way."""
    root = tmp_path_factory.mktemp("many") / "data"
    root.mkdir()
    _dataset(root, n=100, shape=(8, 48, 48), square=22)
    return root


def test_builds_with_worker_processes_that_never_import_tensorflow(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data, n=6, shape=(8, 48, 48), square=22)
    # A `tensorflow` (and `keras`) that fails on import, first on the path of this process and of
    # every worker it spawns (they inherit the environment).
    for name in ("tensorflow", "keras"):
        (tmp_path / "block" / name).mkdir(parents=True)
        (tmp_path / "block" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True,
                             text=True)
    assert blocked.returncode == 1 and "tensorflow is blocked" in blocked.stderr
    args = [str(KERASMED), "-q", *map(str, _args(data, tmp_path / "cache", "--workers", "2"))]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert "cases: 6 built, 0 reused" in first.stdout
    (folder,) = (tmp_path / "cache").iterdir()
    assert f"cache: {folder}  " in first.stdout
    index = Path(first.stdout.split("index: ")[1].strip())
    cases = load_cache(index)
    assert [c.case_id for c in cases] == [f"c{i}" for i in range(6)]
    assert [c.meta["positive_slices"] for c in cases] == [1] * 6
    _check_complete(tmp_path / "cache")
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "cases: 0 built, 6 reused" in again.stdout, again.stderr


def test_workers_default_to_the_usable_cpus_in_a_spawn_pool(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data, n=5, shape=(8, 48, 48))
    pools = []

    class Recording(cache_module.ProcessPoolExecutor):
        def __init__(self, max_workers, mp_context, **kwargs):
            pools.append((max_workers, mp_context.get_start_method()))
            super().__init__(max_workers, mp_context, **kwargs)

    monkeypatch.setattr(cache_module, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(inputs_module, "usable_cpu_count", lambda: 3)
    assert main([str(a) for a in _args(data, tmp_path / "cache")]) == 0
    assert pools == [(3, "spawn")]
    assert "cases: 5 built, 0 reused" in capsys.readouterr().out
    # Only the cases left to build get a process: one case is built in this process.
    os.utime(data / "c2.nii.gz", ns=(0, 10**9))
    assert main([str(a) for a in _args(data, tmp_path / "cache", "--workers", "2")]) == 0
    assert pools == [(3, "spawn")]
    assert "cases: 1 built, 4 reused" in capsys.readouterr().out


@pytest.mark.parametrize("stop", ["SIGKILL to the group", "SIGTERM to the parent",
                                  "SIGTERM to the group", "SIGINT to the group"])
def test_a_stopped_build_leaves_only_whole_cases_and_a_rerun_reuses_them(many_cases, tmp_path, stop):
    cache = tmp_path / "cache"
    sig = getattr(signal, stop.split()[0])
    proc = subprocess.Popen([str(KERASMED), "-q", *map(str, _args(many_cases, cache, "--workers", "2"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a shell job has
                            preexec_fn=_ctrl_c_default)
    try:
        deadline = time.monotonic() + 120
        while len(_finished(cache)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no case was finished in time"
            time.sleep(0.002)
        (os.killpg if stop.endswith("group") else os.kill)(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    expected = {"SIGKILL": (-9, ""), "SIGTERM": (143, "kerasmed preprocess: terminated (SIGTERM)\n"),
                "SIGINT": (130, "kerasmed preprocess: interrupted\n")}[sig.name]
    assert (proc.returncode, stderr) == expected, stdout
    if sig != signal.SIGKILL:  # the workers finished or deleted what they were writing
        assert not list(cache.glob("*/cases/.*"))
    _check_complete(cache)
    finished = _finished(cache)
    assert 3 <= len(finished) < 100

    rerun = kerasmed_process("-q", *_args(many_cases, cache, "--workers", "2"))
    assert rerun.returncode == 0, rerun.stderr
    assert f"cases: {100 - len(finished)} built, {len(finished)} reused" in rerun.stdout
    after = _finished(cache)
    assert len(after) == 100 and {k: after[k] for k in finished} == finished  # the same folders
    assert not list(cache.glob("*/cases/.*"))  # a killed worker's temporary is gone too
    _check_complete(cache)


def test_ctrl_c_while_the_workers_start_is_one_line(many_cases, tmp_path):
    # A worker still importing when Ctrl-C reached the group used to die with a traceback.
    proc = subprocess.Popen([str(KERASMED), "-q", *map(str, _args(many_cases, tmp_path, "--workers", "2"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_ctrl_c_default)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        deadline = time.monotonic() + 120
        while len(children.read_text().split()) < 3:  # the resource tracker and two workers
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert (proc.returncode, stderr) == (130, "kerasmed preprocess: interrupted\n"), stdout
    assert not list(tmp_path.glob("*/cases/.*"))
    _check_complete(tmp_path)


def test_prune_deletes_the_entries_of_replaced_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data, n=3, shape=(8, 48, 48))
    assert kerasmed_process("-q", *_args(data, tmp_path / "cache")).returncode == 0
    _write_case(data, 1, value=-500.0, shape=(8, 48, 48))
    replaced = kerasmed_process("-q", *_args(data, tmp_path / "cache"))
    assert "cases: 1 built, 2 reused" in replaced.stdout, replaced.stderr
    assert len(_finished(tmp_path / "cache")) == 4
    pruned = kerasmed_process("-q", *_args(data, tmp_path / "cache", "--prune"))
    assert "cases: 0 built, 3 reused; 1 unused case/index folders pruned" in pruned.stdout, pruned.stderr
    assert len(_finished(tmp_path / "cache")) == 3


def test_a_bad_case_is_one_line_naming_the_case_and_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _dataset(data, n=4, shape=(8, 48, 48))
    (data / "c2_mask.nii.gz").write_bytes((data / "c2_mask.nii.gz").read_bytes()[:100])
    proc = kerasmed_process("-q", *_args(data, tmp_path / "cache", "--workers", "2"))
    assert_one_line_error(proc, "kerasmed preprocess: error: Case c2: ", f"{data / 'c2_mask.nii.gz'}",
                          "Received:")
    assert not list((tmp_path / "cache").glob("*/cases/.*"))
    assert_one_line_error(kerasmed_process("preprocess", "x.yaml", "--workers", "0"),
                          "argument --workers: must be an integer >= 1. Received: '0'")
