"""`kerasmed bench-train` end to end on a tiny config, as a user runs it (its own process)."""

import json
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "lung_nodule_seg_2d.yaml"
KERASMED = Path(sys.executable).parent / "kerasmed"
TINY = ["synthetic.shape=[12,96,96]", "synthetic.split_fractions=[0.5,0.5,0.0]",
        "preprocessing.size=[null,96,96]", "sampling.patch_size=[48,48]", "sampling.batch_size=4",
        "model.filters=4", "model.depth=2", "training.mixed_precision=float32"]


def test_bench_train_writes_table_json_and_chart(tmp_path):
    out = tmp_path / "bench"
    sets = [arg for s in TINY + [f"data.root={tmp_path / 'absent'}"] for arg in ("--set", s)]
    proc = subprocess.run(
        [str(KERASMED), "-q", "bench-train", str(CONFIG), *sets, "--output", str(out),
         "--repeats", "2", "--window", "3", "--warmup", "1", "--cases", "4"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads((out / "train.json").read_text())
    assert set(result["variants"]) == {"kerasmed tf.data", "kerasmed in-memory", "PyTorch eager NCHW",
                                       "PyTorch channels-last"}
    for name, v in result["variants"].items():
        assert len(v["runs"]) == 2, name
        assert 0 < v["min"] <= v["median"] <= v["max"], name
        assert v["gflops"] > 0 and 0 < v["fraction_of_matmul_peak"]
    # The twins are the same network: equal trainable parameter counts.
    assert result["model"]["trainable_params"]["keras"] == result["model"]["trainable_params"]["torch"]
    assert result["training_gflop_per_patch"] > 0 and result["matmul_peak_gflops_float32"] > 1
    assert result["cpu"]["flags"].keys() >= {"avx2", "avx512f", "avx512_bf16"}
    ratios = result["ratios"]
    assert 0 < ratios["pipeline_vs_ceiling"] < 5 and 0 < ratios["pipeline_float32_vs_best_pytorch"]
    md = (out / "train.md").read_text()
    assert "| kerasmed tf.data | float32 |" in md and "pipeline vs ceiling" in md
    assert (out / "train.png").stat().st_size > 10_000
    assert "| variant |" in proc.stdout
    assert (out / "data" / "manifest.csv").is_file()  # generated because data.root was absent


def test_bench_train_bad_arguments_are_one_line(tmp_path):
    proc = subprocess.run([str(KERASMED), "bench-train", str(CONFIG), "--repeats", "0", "--no-peer",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "repeats" in proc.stderr
