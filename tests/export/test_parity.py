"""export.parity and export.parity_report on the tiny bundle: pass, then deliberate failures."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.parity import (
    DEFAULT_TOLERANCES,
    Tolerances,
    _Reservoir,
    dice_agreement,
    resolve_tolerances,
    run_parity,
)
from export.parity_report import format_table, write_parity_report
from serving.bundle import artefact_sha256, load_bundle
from serving.errors import BundleError, ConfigError
from tests.helpers import copy_bundle, synthetic_ct


@pytest.fixture(scope="module")
def cases():
    return [(f"case{i}", synthetic_ct(seed=i)) for i in range(3)]


@pytest.fixture(scope="module")
def result(bundle_dir, cases):
    return run_parity(bundle_dir, cases, progress=False)


def _corrupt_onnx(src, dst, scale):
    """Copy the bundle, multiply the ONNX logits kernel by `scale`, and re-hash it."""
    bundle = copy_bundle(src, dst)
    model = onnx.load(bundle / "model.onnx")
    (init,) = [i for i in model.graph.initializer if "logits" in i.name and len(i.dims) == 4]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(model, bundle / "model.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["artefacts"]:
        if entry["key"] == "onnx":
            entry["sha256"] = artefact_sha256(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_every_artefact_passes(result, cases):
    assert result.verdict == "pass", format_table(result)
    assert list(result.artefacts) == ["saved_model", "tflite", "onnx"]
    assert result.cases == [c for c, _ in cases]
    for a in result.artefacts.values():
        assert a.passed and a.failed_checks == []
        assert a.max_abs_error <= a.tolerances.max_abs
        assert a.min_passing_max_abs == a.max_abs_error
        assert 0 <= a.mean_abs_error <= a.max_abs_error
        assert a.nan_count == 0 and a.inf_count == 0
        assert set(a.dice_agreement) == {"case0", "case1", "case2"}
        assert a.mean_dice_agreement >= 0.999
        assert a.sample.shape == (3 * 6 * 32 * 32, 2)  # fewer elements than the sample size
        assert a.runtime_s > 0
    assert result.artefacts["saved_model"].masks_identical
    assert result.artefacts["saved_model"].checks == {
        "finite": True, "shape": True, "max_abs": True, "identical_masks": True,
    }
    print("\n" + format_table(result))  # the measured figures, shown with `pytest -s`


def test_report_files_and_manifest_verdict(bundle_dir, result, tmp_path):
    bundle = copy_bundle(bundle_dir, tmp_path / "b")
    before = json.loads((bundle / "manifest.json").read_text())
    report = write_parity_report(result, bundle=bundle)
    assert report == bundle / "parity"
    assert sorted(p.name for p in report.iterdir()) == ["parity.json", "parity.md", "parity.png"]
    data = json.loads((report / "parity.json").read_text())
    assert data["verdict"] == "pass" and set(data["artefacts"]) == {"saved_model", "tflite", "onnx"}
    assert data["artefacts"]["onnx"]["tolerances"] == {
        "max_abs": 1e-4, "min_dice_agreement": 0.999, "identical_masks": False,
    }
    md = (report / "parity.md").read_text()
    assert "PASS" in md and "max abs tol." in md and "| onnx |" in md
    assert (report / "parity.png").read_bytes()[:4] == b"\x89PNG"
    after = json.loads((bundle / "manifest.json").read_text())
    assert after["artefacts"] == before["artefacts"]  # hashes untouched
    assert after["parity"]["verdict"] == "pass"
    assert after["parity"]["report"] == "parity/parity.json"
    assert after["parity"]["tolerances"]["saved_model"]["identical_masks"] is True
    assert after["parity"]["date"] == result.created
    assert {k: v for k, v in after.items() if k != "parity"} == {
        k: v for k, v in before.items() if k != "parity"
    }
    assert load_bundle(bundle).parity["verdict"] == "pass"


def test_slightly_perturbed_onnx_fails_max_abs_only(bundle_dir, cases, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=1.05)
    result = run_parity(bundle, cases, progress=False)
    assert result.verdict == "fail"
    assert result.failures == {"onnx": ["max_abs"]}, format_table(result)
    onnx_parity = result.artefacts["onnx"]
    assert onnx_parity.max_abs_error > 1e-4 and onnx_parity.mean_dice_agreement == 1.0
    assert result.artefacts["saved_model"].passed and result.artefacts["tflite"].passed
    write_parity_report(result, bundle=bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["verdict"] == "fail"
    assert manifest["parity"]["failures"] == {"onnx": ["max_abs"]}


def test_flipped_onnx_fails_dice_agreement(bundle_dir, cases, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=-1.0)
    loose = {"onnx": {"max_abs": 1.0}}  # let only the task-level criterion judge
    result = run_parity(bundle, cases, tolerances=loose, formats=["onnx"], progress=False)
    assert result.failures == {"onnx": ["dice_agreement"]}
    assert result.artefacts["onnx"].mean_dice_agreement < 0.5
    assert not result.artefacts["onnx"].masks_identical


def test_verdict_refused_for_changed_artefacts(bundle_dir, result, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=1.05)
    with pytest.raises(BundleError, match="artefact `onnx` changed since"):
        write_parity_report(result, bundle=bundle)


def test_tolerance_resolution():
    onnx_entry = {"key": "onnx", "format": "onnx", "precision": "fp32"}
    fp16 = {"key": "tflite_fp16", "format": "tflite", "precision": "fp16"}
    int8 = {"key": "onnx_int8", "format": "onnx", "precision": "int8"}
    assert resolve_tolerances(onnx_entry) == Tolerances(1e-4, 0.999)
    assert resolve_tolerances(fp16) == Tolerances(1e-2, 0.99)
    assert resolve_tolerances(int8) == Tolerances(None, 0.95)
    assert resolve_tolerances({"format": "saved_model"}) == DEFAULT_TOLERANCES["saved_model"]
    assert resolve_tolerances(onnx_entry, {"onnx": {"max_abs": 1e-3}}).max_abs == 1e-3
    assert resolve_tolerances(onnx_entry, {"onnx": {"max_abs": 1e-3}}).min_dice_agreement == 0.999
    assert resolve_tolerances(int8, {"int8": Tolerances(None, 0.9)}).min_dice_agreement == 0.9
    assert resolve_tolerances(int8, Tolerances(0.5, None)) == Tolerances(0.5, None)
    with pytest.raises(ConfigError, match="known kinds"):
        resolve_tolerances({"key": "x", "format": "coreml"})


def test_dice_agreement():
    a = np.zeros((2, 4, 4), np.uint8)
    assert dice_agreement(a, a, 1) == 1.0  # both empty
    b = a.copy()
    b[0, :2, :2] = 1
    assert dice_agreement(a, b, 1) == 0.0
    c = b.copy()
    c[0, 0, :] = 1
    assert dice_agreement(b, c, 1) == pytest.approx(2 * 4 / (4 + 6))
    assert dice_agreement(b * 2, c * 2, 3) == pytest.approx(0.8)


def test_reservoir_is_uniform():
    rng = np.random.default_rng(0)
    reservoir = _Reservoir(1000, rng)
    for start in range(0, 100_000, 25_000):
        values = np.arange(start, start + 25_000, dtype=np.float32)
        reservoir.add(values, values)
    assert reservoir.values.shape == (1000, 2)
    assert len(np.unique(reservoir.values[:, 0])) == 1000
    counts = np.histogram(reservoir.values[:, 0], bins=4, range=(0, 100_000))[0]
    assert counts.min() > 200  # ~250 per quarter


def test_parity_needs_cases_and_known_artefacts(bundle_dir, cases):
    with pytest.raises(ConfigError, match="at least one"):
        run_parity(bundle_dir, [], progress=False)
    with pytest.raises(ConfigError, match="valid keys"):
        run_parity(bundle_dir, cases, formats=["coreml"], progress=False)
