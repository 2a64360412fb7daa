"""serving.bundle: sha256 verification, the Bundle API, and serving without TensorFlow."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import (
    DIGEST_KEY,
    MANIFEST_VERSION,
    artefact_sha256,
    data_manifest_path,
    load_bundle,
    sha256_tree,
    write_manifest,
)
from serving.errors import BundleError, ConfigError
from serving.preprocessing import PreprocessSpec
from tests.helpers import assert_allclose, copy_bundle, synthetic_ct

REPO = Path(__file__).resolve().parents[2]


def test_load_exposes_the_manifest(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.path == bundle_dir
    assert bundle.task == "segmentation"
    assert bundle.class_names == ["background", "nodule"]
    assert bundle.threshold == 0.5
    assert bundle.preprocess_spec == PreprocessSpec((None, 1.0, 1.0), (None, 32, 32))
    assert bundle.artefact_keys == ["keras", "saved_model", "tflite", "onnx"]
    assert [a["format"] for a in bundle.artefacts] == bundle.artefact_keys
    assert bundle.manifest["parity"]["verdict"] in ("not_run", "pass")
    assert bundle.artefact("onnx")["opset"] == 17


def test_runner_by_key(bundle_dir):
    bundle = load_bundle(bundle_dir)
    runner = bundle.runner("onnx", intra_op_num_threads=1)
    assert runner.format == "onnx"
    assert bundle.runner("tflite").format == "tflite"
    valid = r"valid keys: \['keras', 'saved_model', 'tflite', 'onnx'\]"
    with pytest.raises(ConfigError, match=valid):
        bundle.runner("coreml")


def test_tampered_onnx_is_refused(bundle_dir, tmp_path):
    copy = copy_bundle(bundle_dir, tmp_path / "b")
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"Artefact `onnx` \(model.onnx\) does not match"):
        load_bundle(copy)


def test_tampered_saved_model_file_is_refused(bundle_dir, tmp_path):
    copy = copy_bundle(bundle_dir, tmp_path / "b")
    (copy / "saved_model" / "assets" / "extra.txt").parent.mkdir(exist_ok=True)
    (copy / "saved_model" / "assets" / "extra.txt").write_text("x")
    with pytest.raises(BundleError, match="Artefact `saved_model`"):
        load_bundle(copy)


def test_missing_artefact_and_manifest(bundle_dir, tmp_path):
    copy = copy_bundle(bundle_dir, tmp_path / "b")
    (copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match=r"Artefact `tflite` .* missing"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="must hold manifest.json"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="must be a folder"):
        load_bundle(tmp_path / "nowhere")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="readable JSON"):
        load_bundle(copy)


def test_tree_hash_is_deterministic(bundle_dir, tmp_path):
    copy = copy_bundle(bundle_dir / "saved_model", tmp_path / "sm")
    assert sha256_tree(copy) == sha256_tree(bundle_dir / "saved_model")
    assert artefact_sha256(copy) == load_bundle(bundle_dir).artefact("saved_model")["sha256"]
    pb = copy / "saved_model.pb"
    pb.rename(copy / "renamed.pb")
    assert sha256_tree(copy) != sha256_tree(bundle_dir / "saved_model")


# The device-side check: only numpy and onnxruntime. Anything importing TensorFlow, Keras,
# kerasmed or export must fail loudly.
_NO_TF_SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = ("tensorflow", "keras", "kerasmed", "export", "tf2onnx")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())

    import numpy as np

    import serving
    from serving.bundle import load_bundle
    from serving.inference import predict_image

    bundle_dir, image_npy, out_npy = sys.argv[1:4]
    bundle = load_bundle(bundle_dir)
    runner = bundle.runner("onnx")
    image = serving.Image(np.load(image_npy), (2.5, 0.8, 0.8), modality="CT")
    probs, _, _ = predict_image(runner, image, bundle.preprocess_spec)
    np.save(out_npy, probs)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok", runner.provider)
    """
)


def test_serving_runs_a_bundle_without_tensorflow(bundle_dir, tmp_path):
    import kerasmed.keras_runner  # noqa: F401 - registers the "keras" runner in this process
    from serving.inference import predict_image

    image = synthetic_ct(seed=3)
    np.save(tmp_path / "image.npy", image.array)
    script = tmp_path / "no_tf.py"
    script.write_text(_NO_TF_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(bundle_dir), str(tmp_path / "image.npy"),
         str(tmp_path / "probs.npy")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    # CUDA with TF32 off on a GPU host, the CPU elsewhere: either way the precision is named.
    assert re.fullmatch(
        r"ok onnxruntime \S+ (CPUExecutionProvider \(fp32\)|CUDAExecutionProvider \(tf32 off\))\n",
        proc.stdout,
    ), proc.stdout
    expected, _, _ = predict_image(
        load_bundle(bundle_dir).runner("keras"), image, load_bundle(bundle_dir).preprocess_spec
    )
    # The ONNX fp32 parity tolerance of DESIGN.md (measured error is ~1e-7).
    assert_allclose(np.load(tmp_path / "probs.npy"), expected, atol=1e-4)


def test_manifest_is_plain_json(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, None, None, 1]


def test_edge_bundle_with_only_onnx_loads_when_asked_for_onnx(bundle_dir, tmp_path):
    edge = tmp_path / "edge"
    edge.mkdir()
    for name in ("manifest.json", "model.onnx"):
        (edge / name).write_bytes((bundle_dir / name).read_bytes())
    with pytest.raises(BundleError, match="missing"):
        load_bundle(edge)  # by default every listed artefact must be there
    bundle = load_bundle(edge, artefacts=["onnx"])
    assert bundle.runner("onnx").format == "onnx"
    with pytest.raises(BundleError, match="not verified"):
        bundle.runner("tflite")
    with pytest.raises(BundleError, match="valid keys"):
        load_bundle(edge, artefacts=["coreml"])


def _fake_bundle(folder: Path, **extra) -> Path:
    """A bundle folder with one (fake) artefact whose sha256 matches: enough for `load_bundle`,
    its manifest written as `export` writes it (strict JSON, sealed)."""
    import hashlib

    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not a model")
    write_manifest(folder, {"task": "segmentation", "input": {}, "extra": extra, "artefacts": [
        {"format": "onnx", "file": "model.onnx", "sha256": hashlib.sha256(b"not a model").hexdigest()}]})
    return folder


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_the_manifest_is_strict_json(tmp_path):
    bundle = _fake_bundle(tmp_path / "b", auc=float("nan"), ci=[float("-inf"), np.float32("nan"), 0.5],
                          n=np.int64(3))
    manifest = _strict((bundle / "manifest.json").read_text())
    assert manifest["extra"] == {"auc": None, "ci": [None, None, 0.5], "n": 3}
    assert manifest["manifest_version"] == MANIFEST_VERSION == 2
    assert load_bundle(bundle).manifest == manifest


def test_a_hand_edited_manifest_is_refused(tmp_path):
    bundle = _fake_bundle(tmp_path / "b")
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest, separators=(",", ":")))  # formatting is no edit
    load_bundle(bundle)
    for edit in ({"parity": {"verdict": "pass"}}, {"task": "classification"}, {"extra": {"purpose": "x"}},
                 {DIGEST_KEY: None}):
        path.write_text(json.dumps({**manifest, **edit}))
        with pytest.raises(BundleError) as info:
            load_bundle(bundle)
        message = str(info.value)
        assert re.fullmatch(rf"{re.escape(str(path))} was edited after kerasmed wrote it: its content no "
                            rf"longer matches its recorded `manifest_sha256`, .*export the bundle again\. "
                            rf"Received: sha256=[0-9a-f]{{64}}, recorded .*", message), message
    # A manifest written before the digest (version 1) loads without one.
    legacy = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    path.write_text(json.dumps({**legacy, "manifest_version": 1, "extra": {"auc": float("nan")}}))
    assert load_bundle(bundle).manifest["extra"]["auc"] != 0.0


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "data/../../x.csv", "C:\\data.csv",
                                  "\\\\server\\share\\m.csv", ""])
def test_the_recorded_data_manifest_is_contained(tmp_path, name):
    bundle = _fake_bundle(tmp_path / "b", manifest=name)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value) == (
        "`extra.manifest` in manifest.json (the validation data's manifest) must be a relative POSIX "
        f"path inside the data folder (not empty, not absolute, no `..`, no NUL byte). Received: {name!r}")
    with pytest.raises(BundleError, match="must be a relative POSIX path inside the data folder"):
        data_manifest_path(tmp_path, name)


def test_the_data_manifest_resolves_inside_the_data_folder(tmp_path):
    root = tmp_path / "data"
    (root / "splits").mkdir(parents=True)
    assert data_manifest_path(root, "splits/val.csv") == root / "splits" / "val.csv"
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    with pytest.raises(BundleError, match=r"must resolve inside the data folder .* Received: 'link.csv' -> "):
        data_manifest_path(root, "link.csv")
    assert load_bundle(_fake_bundle(tmp_path / "b", manifest="splits/val.csv")).task == "segmentation"
