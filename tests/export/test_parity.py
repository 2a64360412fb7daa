"""export.parity and export.parity_report on the tiny bundle: pass, then deliberate failures.

Device-agnostic: on a GPU host the ONNX artefact runs on CUDA with TF32 off and TensorFlow with
TF32 off, and the provider strings say so.
"""

import json
import re
import types

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.parity import (
    DEFAULT_TOLERANCES,
    GOLDEN_CASES,
    VACUOUS_MESSAGE,
    Tolerances,
    _Accumulator,
    _Reservoir,
    resolve_tolerances,
    run_parity,
    tensorflow_tf32,
)
from export.parity_report import format_table, render_markdown, write_parity_report
from serving.bundle import DIGEST_KEY, Bundle, artefact_sha256, load_bundle, write_manifest
from serving.errors import BundleError, ConfigError
from serving.image import Image
from serving.metrics import dice
from serving.tasks import runtime_task
from serving.tasks.segmentation import SegmentationAgreement
from tests.helpers import copy_bundle, synthetic_ct, tiny_unet, write_tiny_bundle

_THRESHOLD = types.SimpleNamespace(threshold=0.5)  # what an Agreement reads of its bundle

# Provider strings name the runtime and its float precision mode, whatever the device.
PROVIDER_PATTERNS = {
    "saved_model": r"TensorFlow \S+ (CPU \(fp32\)|GPU \(tf32 off\))",
    "tflite": r"LiteRT \S+ CPU, XNNPACK \(fp32\)",
    "onnx": r"onnxruntime \S+ (CPUExecutionProvider \(fp32\)|CUDAExecutionProvider \(tf32 off\))",
}


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
    write_manifest(bundle, manifest)  # sealed again, as an export of that model would be
    return bundle


def test_every_artefact_passes(result, cases):
    assert result.verdict == "pass", format_table(result)
    assert list(result.artefacts) == ["saved_model", "tflite", "onnx"]
    assert result.cases == [c for c, _ in cases]
    for a in result.artefacts.values():
        assert a.passed and a.failed_checks == []
        assert a.max_abs_error <= a.tolerances.max_abs
        assert a.min_passing_max_abs == a.max_abs_error < a.tolerances.max_abs
        assert re.fullmatch(PROVIDER_PATTERNS[a.key], a.provider), a.provider
        assert 0 <= a.mean_abs_error <= a.max_abs_error
        assert a.nan_count == 0 and a.inf_count == 0
        assert set(a.agreement) == {"case0", "case1", "case2"}
        assert a.task_summary["mean_dice_agreement"] >= 0.999
        assert a.sample.shape == (3 * 6 * 32 * 32, 2)  # fewer elements than the sample size
        assert a.runtime_s > 0
    assert result.artefacts["saved_model"].task_summary["masks_identical"]
    assert result.artefacts["saved_model"].checks == {
        "finite": True, "shape": True, "max_abs": True, "identical_masks": True,
    }
    # The random tiny U-Net's probabilities straddle 0.5, so every case has Keras foreground.
    assert result.foreground_cases == ["case0", "case1", "case2"]
    assert result.checks == {"foreground_cases": True} and result.messages == []
    # The reference runs as Keras' predict does: one traced tf.function, not layer by layer.
    assert re.fullmatch(
        r"Keras \S+ \(tensorflow backend, tf\.function\), (CPU \(fp32\)|GPU \(tf32 off\))",
        result.reference_provider,
    ), result.reference_provider
    print("\n" + format_table(result))  # the measured figures, shown with `pytest -s`


def test_report_files_and_manifest_verdict(bundle_dir, result, tmp_path):
    bundle = copy_bundle(bundle_dir, tmp_path / "b")
    before = json.loads((bundle / "manifest.json").read_text())
    report = write_parity_report(result, bundle=bundle)
    assert report == bundle / "parity"
    assert sorted(p.name for p in report.iterdir()) == [".kerasmed", "parity.json", "parity.md", "parity.png"]
    data = strict_json((report / "parity.json").read_text())
    assert data["verdict"] == "pass" and set(data["artefacts"]) == {"saved_model", "tflite", "onnx"}
    for key, a in result.artefacts.items():
        assert data["artefacts"][key]["provider"] == a.provider
        assert data["artefacts"][key]["min_passing_max_abs"] == a.max_abs_error
    assert data["foreground_case_count"] == 3 and data["min_foreground_cases"] == 1
    assert data["reference_provider"] == result.reference_provider and data["use_tf32"] is False
    assert data["artefacts"]["onnx"]["tolerances"] == {
        "max_abs": 1e-4, "min_dice_agreement": 0.999, "identical_masks": False,
        "min_label_agreement": 1.0, "max_auc_drop": None,
    }
    assert data["artefacts"]["onnx"]["mean_dice_agreement"] >= 0.999
    md = (report / "parity.md").read_text()
    assert "PASS" in md and "max abs tol." in md and "| onnx |" in md
    assert "min passing tol." in md and "Why it fails" not in md
    assert all(f"| {a.provider} |" in md for a in result.artefacts.values())
    assert "golden cases with foreground in the Keras reference: 3 of 3" in md
    assert (report / "parity.png").read_bytes()[:4] == b"\x89PNG"
    after = strict_json((bundle / "manifest.json").read_text())
    assert after["artefacts"] == before["artefacts"]  # hashes untouched
    assert after["parity"]["verdict"] == "pass"
    assert after["parity"]["report"] == "parity/parity.json"
    assert after["parity"]["tolerances"]["saved_model"]["identical_masks"] is True
    assert after["parity"]["date"] == result.created
    assert after["parity"]["foreground_cases"] == 3
    assert after["parity"]["providers"] == {k: a.provider for k, a in result.artefacts.items()}
    assert {k: v for k, v in after.items() if k not in ("parity", DIGEST_KEY)} == {
        k: v for k, v in before.items() if k not in ("parity", DIGEST_KEY)
    }
    assert load_bundle(bundle).parity["verdict"] == "pass"
    # Files inside the bundle name cases by position, never by case id (a patient ID, maybe),
    # and the bundle by its folder name, never by a local path.
    assert data["cases"] == ["#0", "#1", "#2"] and data["foreground_cases"] == ["#0", "#1", "#2"]
    assert set(data["artefacts"]["onnx"]["agreement"]) == {"#0", "#1", "#2"}
    assert data["bundle"] == result.bundle_path.name and "#0 to #2 in the order parity read them" in md
    for path in (report / "parity.json", report / "parity.md", bundle / "manifest.json"):
        text = path.read_text()
        assert "case0" not in text and str(tmp_path) not in text, path
    assert result.to_dict(local=True)["cases"] == ["case0", "case1", "case2"]


def test_report_outside_the_bundle_records_no_local_path(bundle_dir, result, tmp_path):
    bundle = copy_bundle(bundle_dir, tmp_path / "b")
    report = write_parity_report(result, tmp_path / "elsewhere", bundle=bundle)
    assert (report / "parity.json").is_file()
    recorded = json.loads((bundle / "manifest.json").read_text())["parity"]
    assert recorded["verdict"] == "pass" and recorded["report"] is None


def test_shape_mismatch_messages_name_cases_by_position_in_files():
    entry = {"key": "onnx", "format": "onnx", "file": "model.onnx", "sha256": "0"}
    acc = _Accumulator(10, np.random.default_rng(0), SegmentationAgreement(_THRESHOLD))
    acc.add("MRN-0042", np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 5, 1), np.float32), None)
    a = acc.finish(entry, Tolerances(), "test")
    assert a.messages[0:1] == ["onnx: output shape differs from Keras (MRN-0042: (1, 4, 5, 1) != "
                          "(1, 4, 4, 1))"]
    written = a.to_dict({"MRN-0042": "#0"})
    assert written["shape_mismatches"] == {"#0": "(1, 4, 5, 1) != (1, 4, 4, 1)"}
    assert "MRN" not in json.dumps(written)


def test_slightly_perturbed_onnx_fails_max_abs_only(bundle_dir, cases, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=1.05)
    result = run_parity(bundle, cases, progress=False)
    assert result.verdict == "fail"
    assert result.failures == {"onnx": ["max_abs"]}, format_table(result)
    onnx_parity = result.artefacts["onnx"]
    assert onnx_parity.max_abs_error > 1e-4 and onnx_parity.task_summary["mean_dice_agreement"] == 1.0
    assert result.artefacts["saved_model"].passed and result.artefacts["tflite"].passed
    write_parity_report(result, bundle=bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["verdict"] == "fail"
    assert manifest["parity"]["failures"] == {"onnx": ["max_abs"]}
    assert manifest["parity"]["messages"] == [
        f"onnx: max abs error {onnx_parity.max_abs_error:.3g} > tolerance 0.0001"
    ]


def test_min_passing_max_abs_is_the_observed_error_not_the_tolerance(bundle_dir, cases, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=1.05)
    first = run_parity(bundle, cases, formats=["onnx"], progress=False).artefacts["onnx"]
    observed = first.min_passing_max_abs
    print(f"\nmax abs error {first.max_abs_error:.6e}, min passing tolerance {observed:.6e}")
    assert observed == first.max_abs_error and observed > first.tolerances.max_abs == 1e-4
    # It is the smallest tolerance that passes: exactly it passes, the next float below fails.
    at = run_parity(bundle, cases, {"onnx": {"max_abs": observed}}, ["onnx"], progress=False)
    below = run_parity(bundle, cases, {"onnx": {"max_abs": float(np.nextafter(observed, 0))}},
                       ["onnx"], progress=False)
    assert at.artefacts["onnx"].checks["max_abs"] and at.verdict == "pass"
    assert below.failures == {"onnx": ["max_abs"]}
    assert at.artefacts["onnx"].min_passing_max_abs == observed  # whatever the tolerance


def test_min_passing_max_abs_is_none_when_no_tolerance_would_pass():
    reference = np.full((1, 4, 4, 1), 0.25)
    entry = {"key": "onnx", "format": "onnx", "file": "model.onnx", "sha256": "0"}
    nan = np.full((1, 4, 4, 1), 0.25, np.float32)
    nan[0, 0, 0, 0] = np.nan
    for probs in (nan, np.zeros((1, 4, 5, 1), np.float32)):
        acc = _Accumulator(10, np.random.default_rng(0), SegmentationAgreement(_THRESHOLD))
        acc.add("c", reference, probs, None)
        a = acc.finish(entry, Tolerances(), "test")
        assert a.min_passing_max_abs is None and not a.passed
    acc = _Accumulator(10, np.random.default_rng(0), SegmentationAgreement(_THRESHOLD))
    acc.add("c", reference, (reference + 3e-5).astype(np.float32), None)
    a = acc.finish(entry, Tolerances(), "test")
    assert a.min_passing_max_abs == a.max_abs_error == pytest.approx(3e-5, rel=1e-3)  # float32


def test_accumulated_errors_equal_a_direct_float64_computation():
    rng = np.random.default_rng(0)
    reference = rng.random((2, 5, 6, 1)).astype(np.float32)
    probs = (reference + rng.normal(0, 1e-3, reference.shape)).astype(np.float32)
    probs_nan = probs.copy()
    probs_nan[0, 0, 0, 0], probs_nan[1, 2, 3, 0] = np.nan, np.inf
    entry = {"key": "onnx", "format": "onnx", "file": "model.onnx", "sha256": "0"}
    mask = (reference[..., 0] >= 0.5).astype(np.uint8)
    for p in (probs, probs_nan):
        acc = _Accumulator(10, np.random.default_rng(0), SegmentationAgreement(_THRESHOLD))
        acc.add("c", reference.astype(np.float64), p, None)
        a = acc.finish(entry, Tolerances(), "test")
        err = np.abs(p.astype(np.float64) - reference.astype(np.float64))
        err = err[np.isfinite(err)]
        assert a.max_abs_error == err.max() and a.mean_abs_error == pytest.approx(err.mean())
        assert (a.nan_count, a.inf_count) == ((0, 0) if p is probs else (1, 1))
        expected = dice((np.nan_to_num(p[..., 0], nan=0.0) >= 0.5).astype(np.uint8), mask)
        assert a.agreement == {"c": expected}


def test_case_inputs_are_built_once_with_the_bundles_context(bundle_dir):
    bundle = load_bundle(bundle_dir)
    image = Image(np.random.default_rng(0).uniform(-1000, 400, (5, 32, 32)).astype(np.float32),
                  spacing=(1.0, 1.0, 1.0))
    inputs = runtime_task(bundle.task).inputs(image, bundle, batch_size=2)
    context = bundle.manifest["input"]["shape"][-1]
    assert [b.shape[0] for b in inputs.batches] == [2, 2, 1]
    assert all(b.shape[-1] == context and b.flags.c_contiguous for b in inputs.batches)


def _all_zero_bundle(out_dir):
    """The tiny U-Net with its logits forced to -1e4: probabilities are exactly 0 everywhere."""
    model = tiny_unet(seed=5)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.full_like(bias, -1e4)])
    return write_tiny_bundle(out_dir, model, formats=("keras", "onnx"))


def test_untrained_model_predicting_nothing_fails_parity(cases, tmp_path):
    bundle = _all_zero_bundle(tmp_path / "zero")
    result = run_parity(bundle, cases, progress=False)
    onnx_parity = result.artefacts["onnx"]
    # The artefact "agrees" perfectly, because both masks are empty: that must not pass.
    assert onnx_parity.passed and onnx_parity.task_summary["mean_dice_agreement"] == 1.0
    assert onnx_parity.max_abs_error == 0.0
    assert result.foreground_cases == []
    assert result.verdict == "fail"
    assert result.failures == {GOLDEN_CASES: ["foreground_cases"]}
    assert result.messages == [f"{VACUOUS_MESSAGE} (0 of 3 cases; at least 1 required)"]
    assert VACUOUS_MESSAGE == (
        "no golden case has foreground in the Keras reference; the task-level check would be "
        "vacuous"
    )
    assert f"FAIL: {VACUOUS_MESSAGE}" in format_table(result)
    report = write_parity_report(result, bundle=bundle)
    data = json.loads((report / "parity.json").read_text())
    assert data["verdict"] == "fail" and data["foreground_case_count"] == 0
    assert data["messages"] == result.messages
    md = (report / "parity.md").read_text()
    assert "# Parity report: FAIL" in md and "## Why it fails" in md and VACUOUS_MESSAGE in md
    assert "golden cases with foreground in the Keras reference: 0 of 3" in md
    parity = load_bundle(bundle).parity
    assert parity["verdict"] == "fail" and parity["foreground_cases"] == 0
    assert parity["failures"] == {GOLDEN_CASES: ["foreground_cases"]}
    # An explicit opt-out is possible, and the count is still reported.
    lenient = run_parity(bundle, cases, progress=False, min_foreground_cases=0)
    assert lenient.verdict == "pass" and lenient.foreground_cases == []
    assert "0 of 3 (at least 0 required)" in render_markdown(lenient)


def test_minimum_number_of_foreground_cases(result, bundle_dir, cases):
    strict = run_parity(bundle_dir, cases, formats=["onnx"], progress=False,
                        min_foreground_cases=4)
    assert strict.verdict == "fail" and strict.failures == {GOLDEN_CASES: ["foreground_cases"]}
    assert strict.messages == [
        "only 3 of 3 golden cases have foreground in the Keras reference (at least 4 required); "
        "the task-level check would be too weak"
    ]
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ConfigError, match=f"min_foreground_cases.*Received: "
                                              f"min_foreground_cases={re.escape(repr(bad))}"):
            run_parity(bundle_dir, cases, progress=False, min_foreground_cases=bad)


def test_tf32_is_off_during_parity_and_restored(bundle_dir, cases, monkeypatch):
    import tensorflow as tf

    seen = []
    original = Bundle.runner

    def recording_runner(self, key, **kwargs):
        seen.append((key, kwargs.get("use_tf32"), tf.config.experimental.
                     tensor_float_32_execution_enabled()))
        return original(self, key, **kwargs)

    monkeypatch.setattr(Bundle, "runner", recording_runner)
    with tensorflow_tf32(True):  # TensorFlow's own default
        result = run_parity(bundle_dir, cases[:1], formats=["onnx", "tflite"], progress=False)
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    assert seen == [("keras", None, False), ("onnx", False, False), ("tflite", False, False)]
    assert result.use_tf32 is False
    seen.clear()
    run_parity(bundle_dir, cases[:1], formats=["onnx"], progress=False, use_tf32=True)
    assert seen == [("keras", None, True), ("onnx", True, True)]


def test_flipped_onnx_fails_dice_agreement(bundle_dir, cases, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=-1.0)
    loose = {"onnx": {"max_abs": 1.0}}  # let only the task-level criterion judge
    result = run_parity(bundle, cases, tolerances=loose, formats=["onnx"], progress=False)
    assert result.failures == {"onnx": ["dice_agreement"]}
    assert result.artefacts["onnx"].task_summary["mean_dice_agreement"] < 0.5
    assert not result.artefacts["onnx"].task_summary["masks_identical"]


def test_verdict_refused_for_changed_artefacts(bundle_dir, result, tmp_path):
    bundle = _corrupt_onnx(bundle_dir, tmp_path / "b", scale=1.05)
    with pytest.raises(BundleError, match="artefact `onnx` changed since"):
        write_parity_report(result, bundle=bundle)


def test_no_verdict_over_a_hand_edited_manifest(bundle_dir, result, tmp_path):
    # It used to pass a full compare, which then rewrote the certificate over the edit.
    bundle = copy_bundle(bundle_dir, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["postprocessing"]["threshold"] = 0.05
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    edited = (bundle / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match=r"manifest.json was edited after kerasmed wrote it: .*"
                       r"`manifest_sha256`.* Received: sha256=[0-9a-f]{64}, recorded '[0-9a-f]{64}'$"):
        write_parity_report(result, tmp_path / "report", bundle=bundle)
    assert (bundle / "manifest.json").read_bytes() == edited and not (tmp_path / "report").exists()
    with pytest.raises(BundleError, match="was edited after kerasmed wrote it"):
        load_bundle(bundle)


def test_report_never_lands_in_a_bundles_artefacts(bundle_dir, result, tmp_path):
    bundle = copy_bundle(bundle_dir, tmp_path / "b")
    for inside in (bundle / "saved_model", bundle / "saved_model" / "new", bundle / "mine"):
        with pytest.raises(ConfigError, match=r"must not lie inside the model bundle .* Received: "):
            write_parity_report(result, inside, bundle=bundle)
    load_bundle(bundle)  # every artefact still matches its sha256
    assert not (bundle / "mine").exists()
    # Another bundle's report folder is not this bundle's own either.
    other = copy_bundle(bundle_dir, tmp_path / "other")
    with pytest.raises(ConfigError, match="must not lie inside the model bundle"):
        write_parity_report(result, other / "parity", bundle=bundle)


def _refuse_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str):
    """`json.loads` refusing NaN and Infinity, as JavaScript's JSON.parse does."""
    return json.loads(text, parse_constant=_refuse_constant)


def test_tolerance_resolution():
    onnx_entry = {"key": "onnx", "format": "onnx", "precision": "fp32"}
    fp16 = {"key": "tflite_fp16", "format": "tflite", "precision": "fp16"}
    int8 = {"key": "onnx_int8", "format": "onnx", "precision": "int8"}
    assert resolve_tolerances(onnx_entry) == Tolerances(1e-4, 0.999)
    assert resolve_tolerances(fp16) == Tolerances(1e-2, 0.99, min_label_agreement=0.99)
    assert resolve_tolerances(int8) == Tolerances(None, 0.95, min_label_agreement=None,
                                                  max_auc_drop=0.01)
    assert resolve_tolerances({"format": "saved_model"}) == DEFAULT_TOLERANCES["saved_model"]
    assert resolve_tolerances(onnx_entry, {"onnx": {"max_abs": 1e-3}}).max_abs == 1e-3
    assert resolve_tolerances(onnx_entry, {"onnx": {"max_abs": 1e-3}}).min_dice_agreement == 0.999
    assert resolve_tolerances(int8, {"int8": Tolerances(None, 0.9)}).min_dice_agreement == 0.9
    assert resolve_tolerances(int8, Tolerances(0.5, None)) == Tolerances(0.5, None)
    with pytest.raises(ConfigError, match="known kinds"):
        resolve_tolerances({"key": "x", "format": "coreml"})


def test_segmentation_agreement_scores_foreground_classes():
    a = np.zeros((2, 4, 4, 1))
    agreement = SegmentationAgreement(_THRESHOLD)
    agreement.add("empty", a, a)
    assert agreement.per_case["empty"] == 1.0  # both empty
    b = a.copy()
    b[0, :2, :2] = 1
    agreement.add("disjoint", a, b)
    assert agreement.per_case["disjoint"] == 0.0
    c = b.copy()
    c[0, 0, :] = 1
    agreement.add("overlap", b, c)
    assert agreement.per_case["overlap"] == pytest.approx(2 * 4 / (4 + 6))
    # Three softmax channels: classes 1 and 2 are scored, 0 is background.
    three = np.zeros((1, 4, 4, 3))
    three[..., 0] = 1
    other = three.copy()
    three[0, :2, :2] = [0, 1, 0]
    other[0, :2, :2] = [0, 0, 1]
    agreement.add("classes", three, other)
    assert agreement.per_case["classes"] == 0.0
    assert agreement.summary()["masks_identical"] is False

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
