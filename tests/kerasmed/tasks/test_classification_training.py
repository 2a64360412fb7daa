"""The classification task's training side: targets, balanced sampling, class weights, the
temperature in the exported graph."""

import types

import keras
import numpy as np
import pandas as pd
import pytest

from kerasmed.config import config_from_dict
from kerasmed.tasks import training_task
from kerasmed.tasks.classification import class_weights, index_blocks, targets, with_temperature
from serving.errors import DataError


def _config(**sections):
    raw = {"task": "classification", "data": {"columns": {"mask": None, "label": "label"}},
           "preprocessing": {"target_spacing": [None, None, None], "size": [None, 8, 8]},
           "model": {"name": "cnn", "context_slices": 1, "filters": 2, "depth": 1,
                     "class_names": ["neg", "pos"]},
           "augmentation": {"intensity_shift_hu": 0.0, "intensity_scale": 0.0}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return config_from_dict(raw)


def _cases(labels):
    """Cached cases whose image holds their index, and their manifest."""
    cases = [types.SimpleNamespace(case_id=f"c{i}", image=np.full((1, 8, 8), float(i), np.float32),
                                   mask=None) for i in range(len(labels))]
    manifest = pd.DataFrame({"case_id": [c.case_id for c in cases], "label": labels})
    return cases, manifest


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
