"""`kerasmed demo --profile tiny`, in process: generate, train a few steps, evaluate, export,
compare. The fast profile's figures are checked by test_demo_fast_profile.py (slow)."""

import json
from pathlib import Path

import keras
import pytest

from kerasmed.cli import main
from kerasmed.models.float32 import is_float32
from serving.bundle import load_bundle
from serving.ownership import read_marker

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"


def test_tiny_demo_end_to_end_passes_parity(tmp_path, capsys):
    # `--set` applies after the profile's own overrides (the tiny profile says 3 steps per epoch).
    code = main(["--quiet", "demo", "--workdir", str(tmp_path), "--config", str(CONFIG),
                 "--profile", "tiny", "--set", "training.steps_per_epoch=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "parity: PASS" in out and "report folder:" in out

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    run = tmp_path / "runs" / "lung_nodule_seg_2d"
    assert "steps_per_epoch: 4" in (run / "config.yaml").read_text()
    assert summary["machine"]["name"] and set(summary["machine"]["flags"]) >= {"avx2", "avx512f"}
    for key in ("saved_model", "tflite", "onnx"):
        art = summary["parity"]["artefacts"][key]
        assert art["passed"], art
        assert art["nan_count"] == 0 and art["inf_count"] == 0
    assert summary["parity"]["artefacts"]["saved_model"]["max_abs_error"] <= 1e-5
    assert summary["parity"]["artefacts"]["onnx"]["max_abs_error"] <= 1e-4
    assert summary["parity"]["artefacts"]["tflite"]["max_abs_error"] <= 1e-4
    assert 0.0 <= summary["evaluation"]["baseline_mean_dice"] <= 1.0
    # Parity is not vacuous: the few-step model's probabilities sit around 0.5, and some of its
    # Keras masks have foreground (both validation cases on the 2-core CPU this was written on;
    # the default gate needs one).
    foreground = summary["parity"]["foreground_case_count"]
    print(f"\ngolden cases with foreground in the Keras reference: {foreground} of "
          f"{len(summary['parity']['cases'])}")
    assert foreground >= summary["parity"]["min_foreground_cases"] == 1

    for rel in ("model.keras", "checkpoints/best.keras", "training_log.csv", "config.yaml",
                "eval/metrics.csv", "eval/summary.json", "eval/overlay_montage.png",
                "eval/dice_per_case.png", "eval/training_curves.png",
                "bundle/parity/parity.json", "bundle/parity/parity.md", "bundle/parity/parity.png"):
        assert (run / rel).is_file(), rel
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))

    # Whatever the training precision (`auto` is mixed_float16 on a GPU, mixed_bfloat16 on a CPU
    # with BF16), the run's model and the bundle are float32, so evaluation scores the graph that
    # export ships.
    assert summary["training"]["dtype_policy"] in ("float32", "mixed_bfloat16", "mixed_float16")
    run_model = keras.saving.load_model(run / "model.keras", compile=False)
    assert is_float32(run_model)

    bundle = load_bundle(run / "bundle")  # verifies every sha256
    assert bundle.parity["verdict"] == "pass"
    assert {a["format"] for a in bundle.artefacts} >= {"keras", "saved_model", "tflite", "onnx"}
    # Every folder the demo made is marked as its own, so that a rerun may replace it (slow test
    # below) and nothing else is ever replaced (test_demo_workdir).
    for folder in (tmp_path / "data", run, tmp_path / "report"):
        assert read_marker(folder)["created_by"] == "kerasmed demo", folder


@pytest.mark.slow  # two whole tiny demos (60 s); the plan it follows is unit-tested in test_demo_workdir
def test_tiny_demo_rerun_replaces_only_its_own_run(tmp_path, capsys):
    assert main(["--quiet", "demo", "--workdir", str(tmp_path), "--config", str(CONFIG),
                 "--profile", "tiny", "--set", "training.steps_per_epoch=4"]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "lung_nodule_seg_2d"
    # A rerun (`make demo` twice) replaces what the first run made, which it marked as its own:
    # the dataset is reused as it is, the run is trained again and the report rewritten.
    for folder in (tmp_path / "data", run, tmp_path / "report"):
        assert read_marker(folder)["created_by"] == "kerasmed demo", folder
    dataset = (tmp_path / "data" / "dataset.json").stat().st_mtime_ns
    trained = (run / "train_summary.json").stat().st_mtime_ns
    code = main(["--quiet", "demo", "--workdir", str(tmp_path), "--config", str(CONFIG),
                 "--profile", "tiny"])
    out = capsys.readouterr().out
    assert code == 0 and "report folder:" in out, out
    assert (tmp_path / "data" / "dataset.json").stat().st_mtime_ns == dataset
    assert (run / "train_summary.json").stat().st_mtime_ns != trained
    assert "steps_per_epoch: 3" in (run / "config.yaml").read_text()
