"""`kerasmed bench-ingest` on tiny data: through Python with a bench-train result to read, and as a
user runs it (its own process), measuring training itself."""

import json
import math
import subprocess
import sys
from pathlib import Path

from kerasmed.bench.ingest_bench import _training_from_bench, run_ingest_bench
from kerasmed.bench.machine import cpu_info, describe_cpu
from kerasmed.config import load_config
from kerasmed.data.generate import generate_dataset
from tests.helpers import assert_allclose

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "lung_nodule_seg_2d.yaml"
KERASMED = Path(sys.executable).parent / "kerasmed"
TINY = ["synthetic.shape=[12,96,96]", "synthetic.split_fractions=[0.5,0.5,0.0]",
        "preprocessing.size=[null,96,96]", "sampling.patch_size=[48,48]", "sampling.batch_size=4",
        "model.filters=4", "model.depth=2", "training.mixed_precision=float32"]


def _bench_train_result(config, median=100.0, **changes) -> dict:
    """A `train.json` as bench-train writes it for `config` on this machine (the keys read)."""
    s, m = config.sampling, config.model
    result = {"config": config.name, "patch_size": list(s.patch_size), "batch_size": s.batch_size,
              "dtype_policy": "float32", "cpu_line": describe_cpu(cpu_info()),
              "model": {"context_slices": m.context_slices, "filters": m.filters, "depth": m.depth},
              "variants": {"kerasmed tf.data": {"median": median, "min": median - 10,
                                                "max": median + 10, "runs": [median]}}}
    return {**result, **changes}


def _check_figures(result: dict, repeats: int) -> None:
    single = result["ingestion"]["single_process"]
    build = result["ingestion"]["build_cache"]
    stages = [single["slices_per_s"], single["mb_per_s"], build["slices_per_s"],
              build["one_process_slices_per_s"], result["cache_pipeline"]["patches_per_s"],
              result["training"]]
    for stats in stages:
        assert all(math.isfinite(stats[k]) for k in ("median", "min", "max")), stats
        assert 0 < stats["min"] <= stats["median"] <= stats["max"], stats
    for stats in stages[:-1]:
        assert len(stats["runs"]) == repeats
    assert build["workers"] >= 1
    assert_allclose(sum(single["time_share"].values()), 1.0, atol=1e-9)
    assert all(v > 0 for v in single["time_share"].values())
    # Every ratio is the ratio of the figures reported beside it (training slices: 1 per patch).
    training = result["training"]["median"]
    assert result["training"]["slices_per_s"] == training
    ratios = result["ratios"]
    assert_allclose(ratios["cache_pipeline_vs_training"],
                    result["cache_pipeline"]["patches_per_s"]["median"] / training, atol=1e-9)
    assert_allclose(ratios["ingestion_vs_training_slices"], single["slices_per_s"]["median"] / training,
                    atol=1e-9)
    assert_allclose(ratios["build_cache_vs_training_slices"], build["slices_per_s"]["median"] / training,
                    atol=1e-9)
    assert result["target_met"] == (ratios["cache_pipeline_vs_training"] >= 5.0)


def test_bench_ingest_reads_bench_train_and_writes_json_table_chart(tmp_path):
    config = load_config(CONFIG, TINY)
    out = tmp_path / "bench"
    out.mkdir()
    (out / "train.json").write_text(json.dumps(_bench_train_result(config, median=100.0)))
    result = run_ingest_bench(config, out, cases=2, repeats=1, window=20, progress=False)

    assert result["dataset"]["cases"] == 2 and result["dataset"]["train_cases"] == 1
    assert result["dataset"]["source_slices"] == 2 * 12 and result["dataset"]["source_mb"] > 0
    assert result["page_cache"].startswith("warm")
    # The training figure is bench-train's, as written.
    assert result["training"]["median"] == 100.0 and result["training"]["min"] == 90.0
    assert "bench-train" in result["training"]["source"]
    _check_figures(result, repeats=1)
    assert json.loads((out / "ingest.json").read_text()) == json.loads(json.dumps(result))
    md = (out / "ingest.md").read_text()
    assert "| cached tf.data pipeline, no model | patches/s |" in md
    assert "| training consumes | patches/s | 100.0 | 90.0 | 110.0 |" in md
    assert result["cpu_line"] in md and "cached pipeline vs training" in md
    assert (out / "ingest.png").stat().st_size > 10_000


def test_a_bench_train_result_of_another_setup_or_machine_is_not_used(tmp_path):
    config = load_config(CONFIG, TINY)
    path = tmp_path / "train.json"
    cpu_line = describe_cpu(cpu_info())
    training, why = _training_from_bench(path, config, cpu_line)
    assert training is None and "absent" in why
    path.write_text(json.dumps(_bench_train_result(config, patch_size=[64, 64], cpu_line="other CPU")))
    training, why = _training_from_bench(path, config, cpu_line)
    assert training is None
    assert "patch_size [64, 64] (here [48, 48])" in why and "cpu_line 'other CPU'" in why
    path.write_text("{not json")
    assert _training_from_bench(path, config, cpu_line)[1].startswith(f"{path} unreadable")
    path.write_text(json.dumps(_bench_train_result(config, median=250.0)))
    training, why = _training_from_bench(path, config, cpu_line)
    assert why == "" and training["median"] == 250.0 and training["runs"] == [250.0]


def test_bench_ingest_cli_on_a_given_dataset_measures_training_itself(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, num_cases=3, seed=1, shape=(12, 96, 96), split_fractions=(0.67, 0.33, 0.0),
                     progress=False)
    out = tmp_path / "bench"
    sets = [arg for s in TINY for arg in ("--set", s)]
    proc = subprocess.run(
        [str(KERASMED), "-q", "bench-ingest", str(CONFIG), *sets, "--output", str(out),
         "--data", str(data), "--repeats", "2", "--window", "10"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads((out / "ingest.json").read_text())
    assert result["dataset"]["cases"] == 3 and result["dataset"]["train_cases"] == 2
    assert result["dataset"]["source_slices"] == 3 * 12
    source = result["training"]["source"]
    assert source.startswith("measured here") and "train.json absent" in source
    assert len(result["training"]["runs"]) == 2
    _check_figures(result, repeats=2)
    assert "| build_cache, 1 process | slices/s |" in proc.stdout
    assert (out / "ingest.md").is_file() and (out / "ingest.png").stat().st_size > 10_000


def test_bench_ingest_bad_arguments_are_one_line(tmp_path):
    proc = subprocess.run([str(KERASMED), "bench-ingest", str(CONFIG), "--repeats", "0",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "repeats" in proc.stderr
