"""`kerasmed demo` with the fast (default) profile: the issue's acceptance figures, reproducible with
`make test-slow` (about 10 minutes on 2 cores)."""

import json
from pathlib import Path

import pytest

from kerasmed.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"


@pytest.mark.slow
def test_fast_demo_meets_dice_and_parity_targets(tmp_path):
    code = main(["--quiet", "demo", "--workdir", str(tmp_path), "--config", str(CONFIG)])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    ev = summary["evaluation"]
    assert ev["cases"] >= 8
    assert ev["mean_dice"] >= 0.75, ev
    assert ev["baseline_mean_dice"] <= 0.5, ev
    assert code == 0 and summary["parity"]["verdict"] == "pass"
    assert summary["parity"]["foreground_case_count"] >= 1
    for key in ("saved_model", "tflite", "onnx"):
        assert summary["parity"]["artefacts"][key]["passed"], key
