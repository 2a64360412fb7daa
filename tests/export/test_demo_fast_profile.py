"""`make demo` (the fast profile), run the way the README shows it, as its own process: the issue's
acceptance figures, reproducible with `make test-slow` (about 10 minutes on a 2-core Zen 3)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_demo_meets_dice_and_parity_targets(tmp_path):
    # The Makefile's own venv is the one running this test (make test created it).
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(["make", "demo", f"DEMO_DIR={tmp_path}", f"VENV={venv}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    print(out.stdout[-3000:])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    ev = summary["evaluation"]
    assert ev["cases"] >= 10
    assert ev["mean_dice"] >= 0.75, ev
    assert ev["baseline_mean_dice"] <= 0.5, ev
    assert out.returncode == 0 and summary["parity"]["verdict"] == "pass", out.stderr[-2000:]
    assert summary["parity"]["foreground_case_count"] >= 1
    for key in ("saved_model", "tflite", "onnx"):
        assert summary["parity"]["artefacts"][key]["passed"], key
    assert "model mean Dice (val, " in out.stdout and "parity: PASS" in out.stdout
