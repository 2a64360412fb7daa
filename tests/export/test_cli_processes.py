"""The `kerasmed` console command as a user types it: one fresh OS process per step.

In-process tests share one interpreter, so a class registered by an earlier import (e.g. the
DiceCELoss loss that `train` compiles with) hides a step that would fail on its own. Here every
step is a separate process: generate, train, evaluate, export, compare, on the tiny profile.
"""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from export.demo import PROFILES
from serving.bundle import load_bundle

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"
KERASMED = Path(sys.executable).parent / "kerasmed"


def _kerasmed(*args, cwd):
    start = time.monotonic()
    proc = subprocess.run(
        [str(KERASMED), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    print(f"kerasmed {args[0]}: exit {proc.returncode}, {time.monotonic() - start:.1f} s")
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stderr, output
    return proc


def test_generate_train_evaluate_export_compare_in_separate_processes(tmp_path):
    assert KERASMED.is_file(), f"the console script must be installed next to {sys.executable}"
    sets = []
    for override in PROFILES["tiny"] + [
        f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}",
        "data.cache_dir=null",
    ]:
        sets += ["--set", override]

    _kerasmed("generate", CONFIG, *sets, cwd=tmp_path)
    _kerasmed("train", CONFIG, *sets, cwd=tmp_path)
    run = tmp_path / "runs" / "lung_nodule_seg_2d"
    # The precondition of the bug this test guards: the run's model.keras names kerasmed's loss,
    # which a fresh `export` process has not registered.
    with zipfile.ZipFile(run / "model.keras") as archive:
        compile_config = json.loads(archive.read("config.json"))["compile_config"]
    assert "DiceCELoss" in json.dumps(compile_config)

    _kerasmed("evaluate", run, cwd=tmp_path)
    exported = _kerasmed("export", run, cwd=tmp_path)
    assert f"bundle: {run / 'bundle'}" in exported.stdout
    compared = _kerasmed("compare", run / "bundle", cwd=tmp_path)
    assert "parity: PASS" in compared.stdout, compared.stdout
    print(compared.stdout)

    bundle = load_bundle(run / "bundle")  # verifies every artefact's sha256
    assert {a["key"] for a in bundle.artefacts} >= {"keras", "saved_model", "tflite", "onnx"}
    parity = bundle.parity
    assert parity["verdict"] == "pass" and parity["foreground_cases"] >= 1
    assert parity["providers"]["onnx"].startswith("onnxruntime ")
    assert parity["providers"]["onnx"].endswith(("(fp32)", "(tf32 off)"))

    # A narrower check keeps the recorded certificate (all artefacts, all cases): run in process by
    # tests/corpus/cli_cases.py ("cli/compare-narrower-keeps-the-certificate"). Here: the scope it
    # is compared with, and bad `--max-cases` refused by the installed command before any work.
    manifest = run / "bundle" / "manifest.json"
    recorded = json.loads(manifest.read_text())["parity"]
    assert recorded["scope"]["artefacts"] == sorted(k for k in bundle.artefact_keys if k != "keras")
    assert recorded["scope"]["split_cases"] == recorded["cases"] >= 2
    for bad in ("0", "-3", "two"):
        proc = subprocess.run([str(KERASMED), "compare", str(run / "bundle"), "--max-cases", bad],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "--max-cases" in proc.stderr, proc.stderr
        assert f"must be an integer >= 1. Received: '{bad}'" in proc.stderr
    assert json.loads(manifest.read_text())["parity"] == recorded
