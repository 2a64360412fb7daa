"""The dataset fingerprint from training to the bundle: `model.intensity: ct_fingerprint` end to end."""

import json

import keras
import pytest

from export.run_export import export_run
from kerasmed.data.cache import load_cache
from kerasmed.data.fingerprint import dataset_fingerprint
from kerasmed.layers.ct_normalization import CTNormalization
from kerasmed.training.inputs import cache_for
from kerasmed.training.trainer import build_compiled_model, train
from serving.bundle import load_bundle
from serving.errors import ConfigError
from tests.kerasmed.training.tiny_run import tiny_config


def test_ct_fingerprint_run_records_and_ships_the_training_fingerprint(tiny_data, tmp_path):
    config = tiny_config(tiny_data, "model.intensity=ct_fingerprint", "training.epochs=1",
                         "training.mixed_precision=float32")
    run_dir = tmp_path / "run"
    summary = train(config, run_dir, progress=False)

    # Computed independently here, from the training split of the run's cache.
    expected = dataset_fingerprint(load_cache(cache_for(config, progress=False), "train"))
    recorded = json.loads((run_dir / "fingerprint.json").read_text())
    assert recorded == expected == summary["fingerprint"]
    assert json.loads((run_dir / "train_summary.json").read_text())["fingerprint"] == expected
    assert recorded["num_cases"] == 2 and recorded["foreground_voxels"] > 0
    # The tiny profile's synthetic volumes: 12 x 96 x 96 at 2.5 mm between slices.
    assert recorded["shape_median"] == recorded["shape_min"] == recorded["shape_max"] == [12, 96, 96]
    assert recorded["spacing_min"][0] == recorded["spacing_max"][0] == 2.5
    assert 0.5 < recorded["spacing_min"][1] <= recorded["spacing_median"][1] <= recorded["spacing_max"][1] < 2
    # Lung CT: the foreground is nodules, so its window sits well above air and below bone.
    assert -1000.0 < recorded["foreground_percentile_00_5"] < recorded["foreground_mean"] \
        < recorded["foreground_percentile_99_5"] < 1000.0 and recorded["foreground_std"] > 1.0

    layer = keras.saving.load_model(run_dir / "model.keras", compile=False).get_layer("ct_normalization")
    assert isinstance(layer, CTNormalization)
    assert (layer.low, layer.high, layer.mean, layer.std) == (
        expected["foreground_percentile_00_5"], expected["foreground_percentile_99_5"],
        expected["foreground_mean"], expected["foreground_std"])

    bundle_dir = export_run(run_dir, formats=["keras", "onnx"])
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest["input"]["fingerprint"] == bundle.fingerprint == expected


def test_ct_fingerprint_without_a_fingerprint_is_refused(tiny_data):
    config = tiny_config(tiny_data, "model.intensity=ct_fingerprint")
    with pytest.raises(ConfigError, match=r"`model\.intensity: ct_fingerprint` needs the training "
                       r"set's dataset fingerprint.*Received: fingerprint=None$"):
        build_compiled_model(config)
