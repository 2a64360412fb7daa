"""export.bundle_writer.write_bundle: manifest contract, hashes, atomic replacement."""

import json

import pytest

from export import bundle_writer
from export.bundle_writer import write_bundle
from serving.bundle import artefact_sha256, load_bundle, manifest_digest
from serving.errors import ConfigError
from serving.ownership import BUNDLE, RUN, read_marker, write_marker
from tests.helpers import folder_digest, tiny_preprocess_spec, tiny_unet, write_tiny_bundle


@pytest.fixture(scope="module")
def model():
    return tiny_unet(seed=3)


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_manifest_contract(bundle_dir):
    manifest = strict_json((bundle_dir / "manifest.json").read_text())
    assert manifest["name"] == "tiny-unet" and manifest["task"] == "segmentation"
    assert manifest["class_names"] == ["background", "nodule"]
    assert manifest["input"] == {
        "name": "image",
        "layout": "NHWC",
        "dtype": "float32",
        "shape": [None, None, None, 1],
        "units": "HU",
        "preprocessing": tiny_preprocess_spec().to_dict(),
    }
    assert manifest["output"]["name"] == "probs"
    assert manifest["output"]["shape"] == [None, None, None, 1]
    assert manifest["postprocessing"] == {"threshold": 0.5, "min_component_voxels": 0}
    assert manifest["parity"]["verdict"] in ("not_run", "pass")  # parity tests may have run
    assert manifest["extra"] == {"purpose": "tests"}
    assert manifest["created"].endswith("+00:00")
    libs = ("kerasmed", "tensorflow", "keras", "tf2onnx", "onnxruntime", "onnx", "ai-edge-litert")
    for lib in libs:
        assert manifest["versions"][lib], lib
    files = {a["key"]: a["file"] for a in manifest["artefacts"]}
    assert files == {
        "keras": "model.keras",
        "saved_model": "saved_model",
        "tflite": "model.tflite",
        "onnx": "model.onnx",
    }
    for entry in manifest["artefacts"]:
        assert entry["sha256"] == artefact_sha256(bundle_dir / entry["file"])
        assert entry["precision"] == "fp32" and entry["converter_version"]
    load_bundle(bundle_dir)


def test_existing_bundle_is_replaced_only_when_complete(model, tmp_path, monkeypatch):
    out = write_tiny_bundle(tmp_path / "bundle", model, formats=("keras",))
    first = json.loads((out / "manifest.json").read_text())

    class Boom(bundle_writer.EXPORTERS["keras"]):
        def _write(self, model, path, out_dir):
            raise RuntimeError("disk full")

    monkeypatch.setitem(bundle_writer.EXPORTERS, "keras", Boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tiny_bundle(out, model, formats=("keras",))
    assert json.loads((out / "manifest.json").read_text()) == first  # old bundle intact
    assert _siblings(out) == ["bundle"]  # no temporary folder left behind
    monkeypatch.undo()

    write_tiny_bundle(out, model, formats=("keras", "onnx"))
    assert load_bundle(out).artefact_keys == ["keras", "onnx"]
    assert _siblings(out) == ["bundle"]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(model, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="must be absent, empty or a model bundle folder that kerasmed "
                       "made .*Received: .*home holding 'notes.txt'"):
        write_tiny_bundle(tmp_path / "home", model, formats=("keras",))
    assert (tmp_path / "home" / "notes.txt").read_text() == "precious"


def test_a_stray_manifest_json_does_not_make_a_bundle(model, tmp_path):
    # It used to: any folder holding a file named manifest.json was replaced whole.
    home = tmp_path / "home"
    home.mkdir()
    (home / "manifest.json").write_text('{"files": ["a.png"]}')
    (home / "precious.txt").write_bytes(b"precious\x00bytes")
    before = folder_digest(home)
    with pytest.raises(ConfigError, match="no .kerasmed marker and is no model bundle of an earlier"):
        write_tiny_bundle(home, model, formats=("keras",))
    assert folder_digest(home) == before


def test_only_kerasmed_bundles_are_replaced(model, tmp_path):
    out = write_tiny_bundle(tmp_path / "bundle", model, formats=("keras",))
    assert read_marker(out)["kind"] == BUNDLE  # marked: a rerun may replace it
    (out / "notes.txt").write_text("in a bundle kerasmed made: replaced with it")
    write_tiny_bundle(out, model, formats=("keras",))
    assert sorted(p.name for p in out.iterdir()) == [".kerasmed", "manifest.json", "model.keras"]
    # A bundle of a version before the marker is recognised by its content and replaced too ...
    (out / ".kerasmed").unlink()
    (out / "parity").mkdir()
    write_tiny_bundle(out, model, formats=("keras",))
    assert sorted(p.name for p in out.iterdir()) == [".kerasmed", "manifest.json", "model.keras"]
    # ... but not with a user's file beside it, nor with the marker of another kind.
    (out / ".kerasmed").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holding 'manifest.json', 'model.keras', 'notes.txt'"):
        write_tiny_bundle(out, model, formats=("keras",))
    (out / "notes.txt").unlink()
    write_marker(out, RUN, "kerasmed train")
    with pytest.raises(ConfigError, match="marker says: training run made by kerasmed train"):
        write_tiny_bundle(out, model, formats=("keras",))


def test_no_bundle_inside_another_bundle(model, tmp_path):
    outer = write_tiny_bundle(tmp_path / "outer", model, formats=("keras",))
    before = folder_digest(outer)
    with pytest.raises(ConfigError, match=r"must not lie inside the model bundle .*outer .*Received: .*inn"):
        write_tiny_bundle(outer / "inner", model, formats=("keras",))
    assert folder_digest(outer) == before


def _refuse_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str):
    """`json.loads` that refuses NaN, Infinity and -Infinity, as JavaScript's JSON.parse does."""
    return json.loads(text, parse_constant=_refuse_constant)


def test_manifest_is_strict_json_and_sealed(model, tmp_path):
    # A classifier's evaluation summary holds NaN (an AUC of one class); it used to be written
    # as a bare NaN, which JSON.parse rejects.
    out = write_bundle(model, tmp_path / "b", name="x", class_names=["nodule"],
                       preprocess_spec=tiny_preprocess_spec(), postprocess={"threshold": 0.5},
                       formats=("keras",), extra={"evaluation": {"auc": float("nan"),
                                                                  "ci": [float("-inf"), 1.0]}})
    manifest = strict_json((out / "manifest.json").read_text())
    assert manifest["extra"]["evaluation"] == {"auc": None, "ci": [None, 1.0]}
    assert manifest["manifest_version"] == 2
    assert manifest["manifest_sha256"] == manifest_digest(manifest)
    with pytest.raises(ValueError, match="not strict JSON: NaN"):
        strict_json('{"auc": NaN}')  # the parser this test relies on does refuse


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"formats": ("keras", "coreml")}, r"`formats` must be distinct names from"),
        ({"formats": ("keras", "keras")}, r"`formats` must be distinct"),
        ({"class_names": ["a", "b", "c"]}, r"`class_names` must be 1 or 2 strings"),
        ({"postprocess": {"threshold": 1.5}}, r"threshold.*Received: 1.5"),
        ({"postprocess": {"min_component_voxels": -1}}, r"min_component_voxels.*Received: -1"),
        ({"task": "registration"}, r"Unknown task `registration`; valid names"),
        ({"extra": {"bad": object()}}, r"`extra` must be JSON-serialisable"),
        ({"extra": {"run": {"dir": "/home/me/run"}}},
         r"`extra` must not hold absolute local paths.*Received: extra\.run\.dir='/home/me/run'"),
        ({"extra": {"data": ["ok", "C:\\Users\\me"]}}, r"Received: extra\.data\[1\]='C:"),
    ],
)
def test_invalid_arguments(model, tmp_path, kwargs, match):
    args = {
        "name": "x",
        "class_names": ["nodule"],
        "preprocess_spec": tiny_preprocess_spec(),
        "postprocess": {"threshold": 0.5},
        **kwargs,
    }
    with pytest.raises(ConfigError, match=match):
        write_bundle(model, tmp_path / "b", **args)
    assert not (tmp_path / "b").exists()


def test_compiled_model_is_bundled_without_its_training_state(tmp_path):
    import zipfile

    import keras
    import numpy as np

    from kerasmed.losses import DiceCELoss

    model = tiny_unet(seed=4)
    model.compile(optimizer="adam", loss=DiceCELoss())
    out = write_tiny_bundle(tmp_path / "bundle", model, formats=("keras",))
    with zipfile.ZipFile(out / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    # A compile_config would name kerasmed's loss, which a plain `load_model` cannot resolve.
    assert not config.get("compile_config")
    loaded = keras.saving.load_model(out / "model.keras")  # compile=True: nothing to compile
    x = np.random.default_rng(0).uniform(-1100, 500, (1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x, training=False))
    assert model.compiled  # the caller's model is left as it was


def test_no_absolute_path_in_a_manifest(bundle_dir, tmp_path):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert bundle_writer.absolute_paths(manifest) == []
    assert str(tmp_path.parent) not in json.dumps(manifest)
    found = bundle_writer.absolute_paths({"a": {"b": ["x", "/etc"]}, "c": "~/x", "d": "\\\\srv\\s",
                                          "e": "d:/data", "f": "CPU:0", "g": "../../data"})
    assert found == ["a.b[1]='/etc'", "c='~/x'", "d='\\\\\\\\srv\\\\s'", "e='d:/data'"]


def test_relative_location_is_relative_to_the_bundle_or_none(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    bundle = project / "runs" / "seg" / "bundle"
    assert bundle_writer.relative_location(project / "data", bundle) == "../../../data"
    assert bundle_writer.relative_location(bundle / "sub", bundle) == "sub"
    # Sharing only the file system root, a relative path would spell out the absolute one.
    assert bundle_writer.relative_location("/", bundle) is None
