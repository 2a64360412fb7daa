"""serving.preprocess_spec: the spec's validation, its dict form and the preprocessing version
that bundles record and serving refuses when it does not implement it."""

import hashlib
import json

import numpy as np
import pytest

from serving.bundle import Bundle, load_bundle, validate_manifest
from serving.errors import BundleError, ConfigError
from serving.image import Image
from serving.preprocessing import (
    PREPROCESSING_VERSION,
    PreprocessSpec,
    preprocess,
    preprocessing_version,
)

V1_DICT = {  # what version-1 code wrote: no "version", no version-2 keys
    "target_spacing": [None, 1.5, 1.5],
    "size": [None, 40, 48],
    "pad_value": -1000.0,
    "crop_pad": "centre",
    "resample": "linear (image), nearest (labels); field of view kept",
}


def _linear_reference(a, axis, m):
    """Version 1's linear resampling of one axis, written out: centre-aligned grid, clamped."""
    n = a.shape[axis]
    c = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
    lo = np.floor(c).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * a.ndim
    shape[axis] = m
    w = (c - lo).astype(np.float32).reshape(shape)
    return np.take(a, lo, axis=axis) * (1 - w) + np.take(a, hi, axis=axis) * w


def test_a_version_1_dict_gives_version_1_output():
    vol = np.random.default_rng(1).uniform(-1000, 400, (3, 60, 50)).astype(np.float32)
    image = Image(vol, spacing=(2.0, 1.0, 1.2))
    spec = PreprocessSpec.from_dict(V1_DICT)
    assert preprocessing_version(V1_DICT) == 1
    x, record = preprocess(image, spec)
    # 60 rows at 1.0 mm -> 40 at 1.5 mm; 50 columns at 1.2 mm -> 40 at 1.5 mm, padded to 48
    # with 4 columns of pad_value each side.
    expected = np.full((3, 40, 48), -1000.0, np.float32)
    expected[:, :, 4:44] = _linear_reference(_linear_reference(vol, 1, 40), 2, 40)
    np.testing.assert_array_equal(x, expected)
    assert record.crop_start == (0, 0, -4) and record.box_shape == (3, 60, 50)
    # Labels: nearest, padded with 0.
    labels = (vol > 0).astype(np.uint8)
    y, _ = preprocess(Image(labels, (2.0, 1.0, 1.2)), spec, order="nearest")
    rows = np.floor(np.clip((np.arange(40) + 0.5) * 1.5 - 0.5, 0, 59) + 0.5).astype(int)
    cols = np.floor(np.clip((np.arange(40) + 0.5) * 1.25 - 0.5, 0, 49) + 0.5).astype(int)
    assert y[:, :, :4].max() == 0 and y[:, :, 44:].max() == 0
    np.testing.assert_array_equal(y[:, :, 4:44], labels[:, rows][:, :, cols])
    # The same spec written by version-2 code gives the same bits.
    v2 = PreprocessSpec.from_dict(spec.to_dict())
    assert v2 == spec
    np.testing.assert_array_equal(preprocess(image, v2)[0], x)


def test_to_dict_records_the_version_and_every_step():
    spec = PreprocessSpec(
        (None, 0.8, 0.8), (None, None, None), -1000.0, clip=(-1000, 400), crop_foreground=-500,
        foreground_margin=(1, 4, 4), multiple_of=32, zscore=True, order="cubic",
    )
    d = json.loads(json.dumps(spec.to_dict()))  # through JSON, as in manifest.json
    assert d["version"] == PREPROCESSING_VERSION == 2
    assert d["clip"] == [-1000.0, 400.0] and d["multiple_of"] == [None, 32, 32]
    assert d["foreground_margin"] == [1, 4, 4] and d["zscore"] is True and d["order"] == "cubic"
    assert PreprocessSpec.from_dict(d) == spec


@pytest.mark.parametrize("version", [3, 0, "2", 2.0, True, None, [2]])
def test_a_version_this_code_does_not_implement_is_refused(version):
    with pytest.raises(ConfigError) as info:
        PreprocessSpec.from_dict({**V1_DICT, "version": version})
    message = str(info.value)
    assert message.startswith("`input.preprocessing.version` must be a preprocessing version")
    assert "one of [1, 2]" in message and message.endswith(f"Received: version={version!r}")


def test_a_version_1_dict_with_version_2_keys_is_refused():
    with pytest.raises(ConfigError, match=r"keys \['zscore'\] need preprocessing version 2"):
        PreprocessSpec.from_dict({**V1_DICT, "zscore": True})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clip": (400, -1000)}, r"`clip` must be \[low, high\].*Received: clip=\(400, -1000\)"),
        ({"clip": (0, float("nan"))}, r"`clip` must be"),
        ({"crop_foreground": float("inf")}, r"`crop_foreground` must be a finite threshold"),
        ({"foreground_margin": 2}, r"`foreground_margin` needs `crop_foreground`"),
        ({"crop_foreground": 0, "foreground_margin": (0, -1, 0)}, r"`foreground_margin` must be"),
        ({"multiple_of": 0}, r"`multiple_of` must be an integer >= 1.*Received: multiple_of=0"),
        ({"multiple_of": (16, 16)}, r"one integer >= 1 or null per array axis \(3\)"),
        ({"multiple_of": (None, 1.5, 16)}, r"`multiple_of` must be"),
        ({"zscore": "yes"}, r"`zscore` must be true or false\. Received: zscore='yes'"),
        ({"order": "nearest"}, r"`order` \(image interpolation\) must be one of \('linear', 'cubic'\)"),
    ],
)
def test_bad_version_2_fields_name_the_argument(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PreprocessSpec((None, 1.0, 1.0), (None, 8, 8), **kwargs)


def test_one_integer_means_the_in_plane_axes():
    spec = PreprocessSpec((None, 1.0, 1.0), (None, None, None), crop_foreground=-500, multiple_of=8)
    assert spec.multiple_of == (None, 8, 8) and spec.foreground_margin == (None, 0, 0)
    flat = PreprocessSpec((0.5, 0.5), (None, None), crop_foreground=0.1, foreground_margin=3)
    assert flat.foreground_margin == (3, 3)


def _bundle_folder(tmp_path, preprocessing):
    """A bundle folder with one (fake) artefact whose sha256 matches: enough for `load_bundle`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    manifest = {
        "task": "segmentation",
        "input": {"preprocessing": preprocessing},
        "artefacts": [{"format": "onnx", "file": "model.onnx",
                       "sha256": hashlib.sha256(b"not a model").hexdigest()}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def test_load_bundle_refuses_a_preprocessing_version_it_does_not_implement(tmp_path):
    newer = {**PreprocessSpec((None, 1.0, 1.0), (None, 32, 32)).to_dict(), "version": 3}
    with pytest.raises(BundleError) as info:
        load_bundle(_bundle_folder(tmp_path, newer))
    message = str(info.value)
    assert message.startswith("manifest.json: `input.preprocessing.version` must be")
    assert message.endswith("Received: version=3") and "\n" not in message


def test_bundles_of_version_1_and_2_load_with_their_spec(tmp_path):
    old = load_bundle(_bundle_folder(tmp_path / "v1", V1_DICT))
    assert old.preprocess_spec == PreprocessSpec((None, 1.5, 1.5), (None, 40, 48), -1000.0)
    spec = PreprocessSpec((None, 1.0, 1.0), (None, None, None), crop_foreground=-500, multiple_of=16)
    new = load_bundle(_bundle_folder(tmp_path / "v2", spec.to_dict()))
    assert new.preprocess_spec == spec


def test_a_bad_version_2_step_in_a_manifest_is_a_bundle_error(tmp_path):
    bad = {**PreprocessSpec((None, 1.0, 1.0), (None, 32, 32)).to_dict(), "clip": [5, 1]}
    manifest = validate_manifest({"task": "s", "input": {"preprocessing": bad}, "artefacts": [
        {"format": "onnx", "file": "m.onnx", "sha256": "0" * 64}]})
    with pytest.raises(BundleError, match=r"`clip` must be \[low, high\]"):
        _ = Bundle(tmp_path, manifest).preprocess_spec

