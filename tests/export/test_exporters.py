"""Every exporter, checked through a real runtime (TF, LiteRT, onnxruntime) against Keras."""

import numpy as np
import pytest

from export.exporters.registry import EXPORTERS, get_exporter
from serving.bundle import artefact_sha256
from serving.errors import ConfigError
from serving.runners import make_runner
from tests.helpers import assert_allclose, tiny_unet


@pytest.fixture(scope="module")
def model():
    return tiny_unet(seed=1)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """All four exporters, in registry order, into one folder: {name: manifest entry}."""
    out = tmp_path_factory.mktemp("exported")
    return out, {name: get_exporter(name).export(model, out) for name in EXPORTERS}


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(7)
    return [rng.uniform(-1100, 500, s).astype(np.float32) for s in [(2, 32, 48, 1), (1, 16, 16, 1)]]


@pytest.mark.parametrize("name", ["keras", "saved_model", "tflite", "onnx"])
def test_artefact_runs_like_keras(name, model, exported, batches):
    out, entries = exported
    entry = entries[name]
    assert entry["key"] == name and entry["format"] == name and entry["precision"] == "fp32"
    assert entry["sha256"] == artefact_sha256(out / entry["file"])
    assert entry["converter"] and entry["converter_version"]
    if name == "keras":
        import kerasmed.keras_runner  # noqa: F401 - registers the "keras" runner
    runner = make_runner(entry["format"], out / entry["file"])
    assert [s.name for s in runner.input_specs] == ["image"]
    assert [s.name for s in runner.output_specs] == ["probs"]
    assert runner.input_specs[0].shape == (None, None, None, 1)
    for x in batches:
        assert_allclose(runner.run({"image": x})["probs"], model(x, training=False))


def test_onnx_entry_records_opset(exported):
    assert exported[1]["onnx"]["opset"] == 17
    assert exported[1]["onnx"]["converter"] == "tf2onnx"
    assert exported[1]["saved_model"]["signature"] == "serving_default"


def test_tflite_without_a_saved_model_alongside(model, tmp_path, batches):
    entry = get_exporter("tflite").export(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
    runner = make_runner("tflite", tmp_path / entry["file"])
    assert_allclose(runner.predict(batches[0]), model(batches[0], training=False))


def test_unknown_exporter_lists_valid_names():
    valid = r"valid names: \['keras', 'onnx', 'saved_model', 'tflite'\]"
    with pytest.raises(ConfigError, match=valid):
        get_exporter("coreml")


def test_export_needs_an_existing_folder(model, tmp_path):
    with pytest.raises(ConfigError, match="Received: "):
        get_exporter("keras").export(model, tmp_path / "missing")
