"""`kerasmed bench-seeds` on a tiny config, as a user runs it (its own process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kerasmed.bench.test_train_bench import CONFIG, TINY

KERASMED = Path(sys.executable).parent / "kerasmed"


def test_bench_seeds_trains_each_seed_and_summarises(tmp_path):
    out = tmp_path / "seeds"
    sets = TINY + ["synthetic.num_cases=4", "training.epochs=1", "training.steps_per_epoch=2",
                   "training.max_val_slices=4", f"data.root={tmp_path / 'absent'}"]
    proc = subprocess.run(
        [str(KERASMED), "-q", "bench-seeds", str(CONFIG), *[a for s in sets for a in ("--set", s)],
         "--seeds", "3", "7", "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "seeds.json").read_text())
    assert [r["seed"] for r in result["seeds"]] == [3, 7]
    dice = [r["mean_dice"] for r in result["seeds"]]
    assert all(0.0 <= d <= 1.0 for d in dice) and all(r["cases"] == 2 for r in result["seeds"])
    assert abs(result["mean"] - sum(dice) / 2) < 1e-12 and result["min"] == min(dice)
    for seed in (3, 7):  # each seed is its own run, and the run records its seed
        config = (out / "runs" / f"seed{seed}" / "lung_nodule_seg_2d" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in config
    assert (out / "seeds.png").stat().st_size > 5000
    assert "| 3 |" in proc.stdout and "min **" in proc.stdout


def test_bench_seeds_refuses_repeated_seeds(tmp_path):
    proc = subprocess.run([str(KERASMED), "bench-seeds", str(CONFIG), "--seeds", "1", "1",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "distinct" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bench_seeds_refuses_a_run_folder_it_did_not_make(tmp_path):
    from kerasmed.bench.seeds import run_seed_bench
    from kerasmed.config import load_config
    from serving.errors import ConfigError

    run = tmp_path / "runs" / "seed7" / "lung_nodule_seg_2d"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"someone's model")
    config = load_config(CONFIG, [f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(ConfigError, match=r"The run folder of seed 7 must be .*no \.kerasmed marker.*"
                       r"Choose another output folder"):
        run_seed_bench(config, [3, 7], tmp_path, progress=False)
    assert (run / "model.keras").read_bytes() == b"someone's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # checked before anything is written
