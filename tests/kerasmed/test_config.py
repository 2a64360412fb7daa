import re
from pathlib import Path

import pytest

from kerasmed.config import (
    DEFAULT_INTENSITY_SHIFT,
    config_from_dict,
    load_config,
    save_config,
    shipped_config,
)
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
    ("augmentation", "intensity_shift", ".inf", "augmentation.intensity_shift", "inf"),
    ("augmentation", "intensity_scale", ".nan", "augmentation.intensity_scale", "nan"),
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


# Rules over several keys: a patch or slice side the U-Net cannot halve `depth` times used to fail
# inside TensorFlow at the first concat; class names that do not match the classes trained, and
# only `export` refused them.
@pytest.mark.parametrize("raw, message", [
    ({"sampling": {"patch_size": [60, 64]}},
     r"^config: config key `sampling\.patch_size` must hold multiples of 2\*\*model\.depth = 8\. "
     r"Received: sampling\.patch_size=\[60, 64\], model\.depth=3$"),
    ({"sampling": {"patch_size": [48, 48]}, "model": {"depth": 5}},
     r"`sampling\.patch_size` must hold multiples of 2\*\*model\.depth = 32\. "
     r"Received: sampling\.patch_size=\[48, 48\], model\.depth=5$"),
    ({"preprocessing": {"size": [None, 250, 256]}},
     r"`preprocessing\.size` must hold null or multiples of 2\*\*model\.depth = 8 for y and x\. "
     r"Received: preprocessing\.size=\[None, 250, 256\], model\.depth=3$"),
    ({"model": {"num_classes": 3}},
     r"`model\.class_names` must hold 3 names for model\.num_classes=3\. Received: "
     r"model\.class_names=\['background', 'nodule'\], model\.num_classes=3$"),
    ({"model": {"class_names": ["a", "b", "c"]}},
     r"`model\.class_names` must hold 1 or 2 names for model\.num_classes=1\. Received: "
     r"model\.class_names=\['a', 'b', 'c'\], model\.num_classes=1$"),
])
def test_rules_over_several_keys_name_every_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_sizes_the_model_can_take_are_accepted():
    config = config_from_dict({"preprocessing": {"size": [7, None, 96]}, "model": {"depth": 5},
                               "sampling": {"patch_size": [32, 64]}})
    assert config.preprocessing.size == (7, None, 96)  # z is not a slice side: any length
    config = config_from_dict({"model": {"num_classes": 3, "class_names": ["bg", "a", "b"]}})
    assert config.model.class_names == ("bg", "a", "b")


@pytest.mark.parametrize("window", [[400, -1000], [0, 0], [], [-1000], [-1000, 0, 400]])
def test_reversed_or_empty_hu_window_is_refused(window):
    shown = "[" + ", ".join(map(str, window)) + "]"
    with pytest.raises(ConfigError, match=rf"`model\.hu_window`: must be \[low, high\] in HU with "
                       rf"low < high.*Received: model\.hu_window={re.escape(shown)}$"):
        config_from_dict({"model": {"hu_window": window}})


@pytest.mark.parametrize("fractions", [[0.8, 0.3, -0.1], [0.5, 0.2, 0.1], [0.0, 0.5, 0.5]])
def test_bad_split_fractions_are_refused(fractions):
    with pytest.raises(ConfigError, match=r"`synthetic\.split_fractions`: must be 3 non-negative "
                       r"numbers \(train, val, test\) summing to 1.*Received: "
                       rf"synthetic\.split_fractions={re.escape(str(fractions))}$"):
        config_from_dict({"synthetic": {"split_fractions": fractions}})
    with pytest.raises(ConfigError, match=r"synthetic\.split_fractions"):
        config_from_dict({"synthetic": {"split_fractions": [0.5, 0.5]}})  # wrong length


def test_empty_config_file_is_refused(tmp_path):
    for text in ("", "# only a comment\n"):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"^Config file {re.escape(str(path))} must hold a "
                           r"mapping of config sections\. Received: an empty file$"):
            load_config(path)


def test_non_utf8_config_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^Config file {re.escape(str(path))} must be UTF-8 "
                       r"text\. Received: byte 0xe9 at offset 9 is not UTF-8$"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("training.epochs=[1,", r"^The value of override `training\.epochs` must be valid YAML.*"
     r"Received: 'training\.epochs=\[1,' \("),
    ("model.name={", r"override `model\.name` must be valid YAML.*Received: 'model\.name=\{'"),
    ("noequals", r"^Overrides \(`--set`\) must look like `section\.key=value`.*Received: 'noequals'$"),
    ("training..epochs=3", r"must look like `section\.key=value`.*Received: 'training\.\.epochs=3'$"),
    ("=3", r"must look like `section\.key=value`.*Received: '=3'$"),
])
def test_malformed_overrides_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, [override])


def test_shipped_config_is_found_from_the_package():
    path = shipped_config("lung_nodule_seg_2d.yaml")
    assert path.read_text() == CONFIG.read_text()
    with pytest.raises(ConfigError, match="shipped with kerasmed.*Received: nope.yaml"):
        shipped_config("nope.yaml")


def test_check_slice_shape_names_the_source():
    config = config_from_dict({"preprocessing": {"size": [None, None, None]}})
    config.check_slice_shape((5, 64, 96), "case a")
    with pytest.raises(ConfigError, match=r"multiples of 2\*\*model\.depth = 8.*Received: 64x90 "
                       r"slices from case b, preprocessing\.size=\[None, None, None\], model\.depth=3$"):
        config.check_slice_shape((5, 64, 90), "case b")


def test_intensity_shift_is_a_fraction_of_the_unit_or_absolute_on_request(tmp_path):
    default = config_from_dict({})
    assert default.augmentation.intensity_shift == DEFAULT_INTENSITY_SHIFT == 20.0 / 1400.0
    assert default.augmentation.intensity_shift_hu is None
    assert load_config(CONFIG).augmentation == default.augmentation  # the shipped value is exact
    # An absolute shift replaces the relative default: a run's config.yaml from before the
    # relative key existed (only `intensity_shift_hu`) still means what it meant.
    absolute = config_from_dict({"augmentation": {"intensity_shift_hu": 30}})
    assert absolute.augmentation.intensity_shift is None
    assert absolute.augmentation.intensity_shift_hu == 30.0
    for config in (default, absolute):  # a run's saved config (one of the two null) reads back
        save_config(config, tmp_path / "c.yaml")
        assert load_config(tmp_path / "c.yaml") == config
    overridden = load_config(CONFIG, ["augmentation.intensity_shift_hu=30",
                                      "augmentation.intensity_shift=null"])
    assert overridden.augmentation == absolute.augmentation
    with pytest.raises(ConfigError, match=re.escape(
            "set one, the other null. Received: augmentation.intensity_shift=0.014285714285714285, "
            "augmentation.intensity_shift_hu=30")):
        load_config(CONFIG, ["augmentation.intensity_shift_hu=30"])
    with pytest.raises(ConfigError, match=re.escape(
            "`augmentation.intensity_shift` must be a number (0: no shift)")):
        config_from_dict({"augmentation": {"intensity_shift": None}})
