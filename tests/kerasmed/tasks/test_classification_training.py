"""The classification task's training side: targets, balanced sampling, class weights, the
temperature in the exported graph."""

import itertools
import types

import keras
import numpy as np
import pandas as pd
import PIL.Image
import pytest

from kerasmed.config import DEFAULT_INTENSITY_SHIFT, config_from_dict
from kerasmed.data.cache import load_cache
from kerasmed.data.manifest import dataset_manifest
from kerasmed.tasks import training_task
from kerasmed.tasks.classification import (
    balance_groups,
    case_arrays,
    class_weights,
    index_blocks,
    targets,
    with_temperature,
)
from kerasmed.training.inputs import cache_for
from kerasmed.training.trainer import build_compiled_model
from serving.errors import DataError


def _config(**sections):
    raw = {"task": "classification", "data": {"columns": {"mask": None, "label": "label"}},
           "preprocessing": {"target_spacing": [None, None, None], "size": [None, 8, 8]},
           "model": {"name": "cnn", "context_slices": 1, "filters": 2, "depth": 1,
                     "class_names": ["neg", "pos"]},
           "augmentation": {"intensity_shift": 0.0, "intensity_scale": 0.0}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return config_from_dict(raw)


def _cases(labels):
    """Cached cases whose image holds their index, and their manifest."""
    cases = [types.SimpleNamespace(case_id=f"c{i}", image=np.full((1, 8, 8), float(i), np.float32),
                                   mask=None) for i in range(len(labels))]
    manifest = pd.DataFrame({"case_id": [c.case_id for c in cases], "label": labels})
    return cases, manifest


def test_a_split_without_both_classes_is_refused_for_every_kind_of_label():
    # Issue 16: one class in a split trained silently and logged "val_auc 0.000".
    task = training_task("classification")

    def rows(split_labels, **columns):
        splits = [s for s, labels in split_labels.items() for _ in labels]
        labels = [label for labels in split_labels.values() for label in labels]
        return pd.DataFrame({"case_id": [f"c{i}" for i in range(len(splits))], "split": splits,
                             "label": labels, **columns})

    task.check_cases(_config(), rows({"train": ["neg", "pos"], "val": ["pos", "neg"]}))
    with pytest.raises(DataError, match=r"^A classifier's `val` split must hold cases of both classes: "
                       r"the validation AUC .*Received: 2 `val` cases: neg 0, pos 2$"):
        task.check_cases(_config(), rows({"train": ["neg", "pos"], "val": ["pos", "pos"]}))
    softmax = _config(model={"num_classes": 3, "class_names": ["x", "y", "z"]})
    task.check_cases(softmax, rows({"train": ["x", "y"], "val": ["z", "x"]}))  # two classes suffice
    with pytest.raises(DataError, match=r"`train` split must hold cases of at least two classes: a "
                       r"model shown one class learns nothing.*Received: 2 `train` cases: x 0, y 2, z 0$"):
        task.check_cases(softmax, rows({"train": ["y", "y"], "val": ["z", "x"]}))
    findings = _config(data={"columns": {"mask": None, "label": None, "findings": ["f", "g"]}},
                       model={"num_classes": 2, "class_names": ["f", "g"]})
    # A finding that a small split lacks is allowed; a split without any finding is not.
    task.check_cases(findings, rows({"train": ["", ""], "val": ["", ""]}, f=["0", "0", "1", "0"],
                                    g=["1", "0", "0", "0"]))
    with pytest.raises(DataError, match=r"`val` split must hold cases with a finding and cases "
                       r"without.*Received: 2 `val` cases: with a finding 0, without 2$"):
        task.check_cases(findings, rows({"train": ["", ""], "val": ["", ""]}, f=["0", "0", "0", "0"],
                                        g=["1", "0", "0", "0"]))


def test_targets_binary_multiclass_and_findings():
    config = _config()
    rows = pd.DataFrame({"case_id": ["a", "b"], "label": ["pos", "neg"]})
    assert targets(rows, config).tolist() == [[1.0], [0.0]]
    multi = _config(model={"num_classes": 3, "class_names": ["x", "y", "z"]})
    assert targets(pd.DataFrame({"case_id": ["a"], "label": ["z"]}), multi).tolist() == [[0, 0, 1]]
    with pytest.raises(DataError, match=r"Case a: its label must be one of `model.class_names`"):
        targets(pd.DataFrame({"case_id": ["a"], "label": ["w"]}), multi)
    findings = _config(data={"columns": {"mask": None, "label": None, "findings": ["f 1", "g"]}},
                       model={"num_classes": 2, "class_names": ["f 1", "g"]})
    rows = pd.DataFrame({"case_id": ["a"], "f 1": ["1"], "g": ["0"]})
    assert targets(rows, findings).tolist() == [[1.0, 0.0]]


def test_balanced_sampling_draws_each_class_equally_and_weights_balance_the_loss():
    groups = np.array([0] * 9 + [1])
    block = next(index_blocks(groups, True, seed=0))
    assert np.bincount(groups[block]).tolist() == [9, 9]  # the one positive, 9 times
    assert sorted(next(index_blocks(groups, False, seed=0))) == list(range(10))
    y = groups[:, None].astype(np.float32)
    weights = class_weights(y, "sigmoid")
    assert weights[:9] == pytest.approx(10 / 18) and weights[9] == pytest.approx(10 / 2)
    assert (weights * (y[:, 0] == 1)).sum() == pytest.approx((weights * (y[:, 0] == 0)).sum())


@pytest.mark.parametrize("balance", ["sampling", "weights", "none"])
def test_train_dataset_streams_images_with_their_targets(balance):
    config = _config(classification={"class_balance": balance}, sampling={"batch_size": 20})
    cases, manifest = _cases(["neg"] * 9 + ["pos"])
    batch = next(iter(training_task("classification").train_dataset(config, cases, manifest)))
    x, y = batch[0].numpy(), batch[1].numpy()
    index = x[:, 0, 0, 0].round().astype(int)  # flips and turns keep a constant image constant
    assert (y[:, 0] == (index == 9)).all()  # each image comes with its own label
    positives = int(y.sum())
    if balance == "sampling":  # a block of 18 holds 9 of each class; 2 more come from the next
        assert 9 <= positives <= 11
    else:  # two permutations of the 10 cases: the one positive twice
        assert positives == 2
    if balance == "weights":
        assert batch[2].numpy()[y[:, 0] == 1] == pytest.approx(5.0)
    else:
        assert len(batch) == 2


def test_temperature_divides_the_logits_in_the_exported_graph():
    inputs = keras.Input((3,), name="image")
    logits = keras.layers.Dense(1, name="logits")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid", name="probs")(logits))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    z = model.get_layer("logits")(x).numpy()
    scaled = with_temperature(model, 2.5, "sigmoid")
    np.testing.assert_allclose(scaled.predict(x, verbose=0), 1 / (1 + np.exp(-z / 2.5)), atol=1e-6)
    assert scaled.output_names == ["probs"]


def test_default_ct_augmentation_is_the_absolute_20_hu_bit_for_bit():
    """On the default CT window the relative shift (20/1400 of its width) draws what the
    absolute +-20 HU did."""
    rng = np.random.default_rng(0)
    cases, manifest = _cases(["neg", "pos"] * 4)
    for case in cases:
        case.image = rng.uniform(-1000, 400, (1, 8, 8)).astype(np.float32)
    relative = _config(augmentation={"intensity_shift": DEFAULT_INTENSITY_SHIFT,
                                     "intensity_scale": 0.05})
    absolute = _config(augmentation={"intensity_shift": None, "intensity_shift_hu": 20.0,
                                     "intensity_scale": 0.05})
    task = training_task("classification")
    for a, b in zip(task.train_dataset(relative, cases, manifest).take(3),
                    task.train_dataset(absolute, cases, manifest).take(3)):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())


def _write_16_bit_fluorescence(root, n=16, size=16):
    """A CSV manifest of 16-bit PNG "nuclei" patches: bright blobs on a bright background,
    12 train and 4 val images, alternating classes (positives: a larger, brighter nucleus)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2
    rows = []
    for i in range(n):
        positive = i % 2 == 1
        radius = 5.0 if positive else 3.0
        image = rng.normal(21000, 1500, (size, size)) + (np.hypot(yy, xx) < radius) * 20000
        PIL.Image.fromarray(np.clip(image, 0, 65535).astype(np.uint16)).save(root / f"n{i}.png")
        rows.append((f"n{i}", f"n{i}.png", "pos" if positive else "neg",
                     "train" if i < 12 else "val"))
    pd.DataFrame(rows, columns=["case_id", "image_path", "label", "split"]).to_csv(
        root / "manifest.csv", index=False)


def _dihedral(image):
    """The 8 flips and quarter turns of an `(H, W, C)` image."""
    return [np.rot90(x, k) for x in (image, np.flip(image, 1)) for k in range(4)]


def test_z_scored_16_bit_images_are_augmented_within_a_few_standard_deviations(tmp_path):
    """Microscopy as the README advises it (`preprocessing.zscore`), with the default
    augmentation: the intensity jitter is a fraction of one standard deviation, not +-20 of them
    (an absolute +-20 "HU" on z-scored data), and a tiny classifier trains to a finite loss."""
    _write_16_bit_fluorescence(tmp_path)
    config = config_from_dict({
        "task": "classification", "name": "nuclei", "output_dir": str(tmp_path / "runs"),
        "data": {"root": str(tmp_path), "columns": {"mask": None, "label": "label"}},
        "preprocessing": {"target_spacing": [None, None, None], "size": [None, 16, 16],
                          "pad_value": 0.0, "zscore": True},
        "sampling": {"batch_size": 8},
        "model": {"name": "cnn", "context_slices": 1, "filters": 2, "depth": 1,
                  "intensity": "none", "class_names": ["neg", "pos"]},
        "training": {"epochs": 1, "steps_per_epoch": 2},
    })
    assert config.augmentation.intensity_shift == DEFAULT_INTENSITY_SHIFT  # the default
    manifest = dataset_manifest(config)
    cases = load_cache(cache_for(config, progress=False, workers=1), "train")
    x, y = case_arrays(config, cases, manifest)  # z-scored, not augmented
    assert x.shape == (12, 16, 16, 1) and np.abs(x.mean(axis=(1, 2, 3))).max() < 1e-3
    assert x.std(axis=(1, 2, 3)) == pytest.approx(1.0, abs=1e-3)
    dataset = training_task("classification").train_dataset(config, cases, manifest)
    augmented = next(iter(dataset))[0].numpy()
    # The stream's case order: the task's balanced sampler with the config's seed.
    blocks = index_blocks(balance_groups(y, "sigmoid"), True, config.seed)
    order = np.concatenate(list(itertools.islice(blocks, 2)))[:len(augmented)]
    for image, index in zip(augmented, order):
        original = x[index]
        # Up to flips and quarter turns, each pixel moves by at most 5% of itself plus the shift.
        error = min(np.abs(image - t).max() for t in _dihedral(original))
        assert 0 < error <= 0.05 * np.abs(original).max() + DEFAULT_INTENSITY_SHIFT + 1e-5
        assert error < 3.0  # standard deviations
    model = build_compiled_model(config)
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
