"""Classification end to end, as a user types it: generate -> train -> evaluate -> export ->
compare, one OS process per step, at a tiny size, for the three data layouts: a CSV manifest of
2.5D NIfTI patches, an ImageFolder tree of 16-bit PNGs, and a CSV with one 0/1 column per finding
(multi-label)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import kerasmed_process

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["synthetic.num_cases=6", "synthetic.patches_per_case=8", "synthetic.shape=[32,192,192]",
        "training.epochs=2", "training.steps_per_epoch=6", "sampling.batch_size=8",
        "model.filters=4", "model.depth=2", "classification.bootstrap=50"]


def _sets(*overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def _ok(proc):
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stderr, output
    return proc


def _chain(tmp_path, config, sets, data_root=None):
    """generate (unless `data_root` holds data already), train, evaluate, export, compare."""
    if data_root is None:
        _ok(kerasmed_process("generate", config, *sets, cwd=tmp_path))
    train = _ok(kerasmed_process("train", config, *sets, cwd=tmp_path, timeout=600))
    assert "best val_auc" in train.stdout
    name = next(s.split("=", 1)[1] for s in sets if s.startswith("name="))
    run = tmp_path / "runs" / name
    evaluate = _ok(kerasmed_process("evaluate", run, cwd=tmp_path))
    assert "model AUC (val," in evaluate.stdout and "histogram baseline AUC" in evaluate.stdout
    summary = json.loads((run / "eval" / "summary.json").read_text())
    for png in ("roc.png", "pr.png", "confusion.png", "calibration.png", "training_curves.png"):
        assert (run / "eval" / png).stat().st_size > 5000, png
    predictions = pd.read_csv(run / "eval" / "predictions.csv")
    assert len(predictions) == summary["cases"] and predictions.filter(like="prob_").notna().all().all()
    _ok(kerasmed_process("export", run, cwd=tmp_path, timeout=600))
    compare = kerasmed_process("compare", run / "bundle", cwd=tmp_path, timeout=600)
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    return summary, manifest, compare


@pytest.mark.slow
def test_csv_nifti_patches_binary(tmp_path):
    sets = _sets(*TINY, "name=csv_cls", f"data.root={tmp_path / 'data'}")
    summary, manifest, compare = _chain(tmp_path, CONFIGS / "nodule_cls.yaml", sets)
    _ok(compare)
    assert "parity: PASS" in compare.stdout or manifest["parity"]["verdict"] == "pass", compare.stdout
    assert manifest["task"] == "classification" and manifest["class_names"] == ["no_nodule", "nodule"]
    assert manifest["output"]["shape"] == [None, 1] and manifest["output"]["activation"] == "sigmoid"
    assert manifest["input"]["shape"][1:] == [None, None, 3]
    # The operating point the evaluation chose (sensitivity >= 0.9) is the bundle's threshold.
    assert manifest["postprocessing"]["threshold"] == pytest.approx(summary["operating_threshold"])
    assert summary["sensitivity"] >= 0.9
    parity = json.loads((tmp_path / "runs" / "csv_cls" / "bundle" / "parity" / "parity.json").read_text())
    for key in ("saved_model", "tflite", "onnx"):
        art = parity["artefacts"][key]
        # Every label agrees, or the flips are ties at the threshold (within max_abs of it).
        assert art["gated_label_agreement"] == 1.0, parity["messages"]
        assert art["label_agreement"] == 1.0 or art["ties"] >= 1, art
        assert parity["artefacts"][key]["auc_drop"] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.slow
def test_imagefolder_of_16_bit_pngs(tmp_path):
    sets = _sets(*TINY, "name=png_cls", f"data.root={tmp_path / 'png'}")
    summary, manifest, compare = _chain(tmp_path, CONFIGS / "imagefolder_cls.yaml", sets)
    _ok(compare)
    classes = sorted(p.name for p in (tmp_path / "png").iterdir() if p.is_dir() and p.name != "cache")
    assert classes == ["no_nodule", "nodule"]
    assert manifest["input"]["shape"][1:] == [None, None, 1]
    assert manifest["parity"]["verdict"] == "pass"


@pytest.mark.slow
def test_csv_multi_label(tmp_path):
    data = tmp_path / "data"
    _ok(kerasmed_process("generate", CONFIGS / "nodule_cls.yaml",
                         *_sets(*TINY, f"data.root={data}"), cwd=tmp_path))
    table = pd.read_csv(data / "manifest.csv")
    table["nodule"] = (table["label"] == "nodule").astype(int)
    # A second finding: a nodule wider than the median (3.6 px radius on the centre slice).
    table["large_nodule"] = (table["nodule_radius_px"].fillna(0) >= 3.6).astype(int)
    table.drop(columns="label").to_csv(data / "findings.csv", index=False)
    sets = _sets(*TINY, "name=multi_cls", f"data.root={data}", "data.manifest=findings.csv",
                 "data.columns.label=null", "data.columns.findings=[nodule,large_nodule]",
                 "model.num_classes=2", "model.class_names=[nodule,large_nodule]")
    summary, manifest, compare = _chain(tmp_path, CONFIGS / "nodule_cls.yaml", sets, data_root=data)
    _ok(compare)
    assert summary["outputs"] == ["nodule", "large_nodule"] and summary["activation"] == "sigmoid"
    assert manifest["output"]["shape"] == [None, 2]
    assert manifest["class_names"] == ["nodule", "large_nodule"]
