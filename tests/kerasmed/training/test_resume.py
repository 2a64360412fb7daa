"""`kill -9` during training, then the same command again: the run resumes where it stopped."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kerasmed.training.callbacks import read_backup
from kerasmed.training.trainer import train
from tests.helpers import assert_allclose
from tests.kerasmed.training.tiny_run import (
    CONFIG,
    ROOT,
    model_weights,
    read_log,
    tiny_config,
    tiny_overrides,
)

# Long enough epochs (~1 s here) to be killed in the middle of one.
LONGER = ("training.deterministic=true", "training.epochs=6", "training.steps_per_epoch=40")


def _command(data_root, run_dir):
    args = [sys.executable, "-m", "kerasmed.cli", "-q", "train", str(CONFIG), "--run-dir", str(run_dir)]
    for item in tiny_overrides(data_root, *LONGER):
        args += ["--set", item]
    return args


def _rows(log):
    try:
        return len(read_log(log))
    except OSError:
        return 0


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(_command(tiny_data, run_dir), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "training_log.csv"
    try:
        deadline = time.monotonic() + 300
        while _rows(log) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = time.monotonic()
        while _rows(log) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        epoch_seconds = time.monotonic() - first
        time.sleep(epoch_seconds / 2)  # into the middle of the third epoch
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    logged = _rows(log)
    committed = read_backup(run_dir / "backup")["epoch"]
    assert 1 <= committed <= logged < 6 and not (run_dir / "model.keras").exists()

    out = subprocess.run(_command(tiny_data, run_dir), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    resumed = re.search(r"^resuming from epoch (\d+)", out.stdout, re.M)
    assert resumed and int(resumed.group(1)) == committed >= 1, out.stdout
    rows = read_log(log)
    assert [r["epoch"] for r in rows] == [str(e) for e in range(6)]  # each epoch exactly once
    assert not (run_dir / "backup").exists() and (run_dir / "train_summary.json").is_file()

    reference = tmp_path / "reference"
    train(tiny_config(tiny_data, *LONGER), reference, progress=False)
    expected = read_log(reference / "training_log.csv")
    # With training.deterministic the resumed run is measured bit-identical to the uninterrupted
    # one (same data stream position, optimizer state and callback state); the project's default
    # tolerance leaves room for a machine whose kernels are not bitwise stable across processes.
    for key in ("loss", "dice", "val_loss", "val_dice"):
        assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in expected], err_msg=key)
    for a, b in zip(model_weights(run_dir / "model.keras"), model_weights(reference / "model.keras"),
                    strict=True):
        assert_allclose(a, b, atol=1e-5)
    assert np.isfinite([float(r["loss"]) for r in rows]).all()
