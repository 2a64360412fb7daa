from pathlib import Path

import pytest

from kerasmed.config import config_from_dict, load_config
from serving.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lung_nodule_seg_2d.yaml"


def test_shipped_config_is_valid():
    config = load_config(CONFIG)
    assert config.name == "lung_nodule_seg_2d"
    assert config.preprocessing.spec().size == (None, 288, 288)
    assert config.model.context_slices == 5


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"filterz": 16}})
    msg = str(err.value)
    assert "model.filterz" in msg and "'filters'" in msg and "Received: model.filterz=16" in msg


def test_negative_patch_size_names_key_and_value():
    with pytest.raises(ConfigError, match=r"sampling\.patch_size\.0.*Received: sampling\.patch_size\.0=-96"):
        config_from_dict({"sampling": {"patch_size": [-96, 96]}})


def test_bad_enum_lists_valid_values():
    with pytest.raises(ConfigError, match="mixed_bfloat16.*Received: training.mixed_precision='fp8'"):
        config_from_dict({"training": {"mixed_precision": "fp8"}})


def test_overrides_and_missing_file(tmp_path):
    config = load_config(CONFIG, ["training.epochs=3", "model.filters=8"])
    assert (config.training.epochs, config.model.filters) == (3, 8)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(CONFIG, ["epochs"])


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_deterministic_is_off_by_default_and_in_the_shipped_config():
    assert config_from_dict({}).training.deterministic is False
    assert "deterministic: false" in CONFIG.read_text()
    assert load_config(CONFIG, ["training.deterministic=true"]).training.deterministic is True
    with pytest.raises(ConfigError, match="training.deterministic"):
        config_from_dict({"training": {"deterministic": "sometimes"}})


# YAML spellings of NaN and infinity, where the key is and what the error says was received.
NON_FINITE = [
    ("preprocessing", "pad_value", ".nan", "preprocessing.pad_value", "nan"),
    ("model", "hu_window", "[.nan, 400]", "model.hu_window.0", "nan"),
    ("training", "learning_rate", ".inf", "training.learning_rate", "inf"),
    ("preprocessing", "target_spacing", "[null, -.inf, 1.5]", "preprocessing.target_spacing.1", "-inf"),
    ("augmentation", "intensity_shift_hu", ".inf", "augmentation.intensity_shift_hu", "inf"),
    ("evaluation", "threshold", ".nan", "evaluation.threshold", "nan"),
]


def _refused(key: str, received: str):
    return pytest.raises(
        ConfigError, match=rf"config key `{key}`: .*finite.*Received: {key}={received}$"
    )


@pytest.mark.parametrize("section, field, value, key, received", NON_FINITE)
def test_non_finite_floats_are_refused_in_a_yaml_file(tmp_path, section, field, value, key, received):
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {field}: {value}\n")
    with _refused(key, received):
        load_config(path)


@pytest.mark.parametrize("section, field, value, key, received", NON_FINITE)
def test_non_finite_floats_are_refused_in_overrides(section, field, value, key, received):
    with _refused(key, received):
        load_config(CONFIG, [f"{section}.{field}={value}"])
