"""The classification task's runtime side: inputs, decisions, results, parity agreement."""

import types

import numpy as np
import pytest

from export.tolerances import Tolerances
from serving.errors import ConfigError, DataError
from serving.metrics import roc_auc
from serving.tasks import TASKS, runtime_task
from serving.tasks.classification import ClassificationAgreement, decisions, model_input


def _bundle(activation="sigmoid", threshold=0.5, names=("no", "yes"), shape=(None, 8, 8, 3)):
    return types.SimpleNamespace(
        manifest={"output": {"activation": activation}, "input": {"shape": list(shape)}},
        threshold=threshold, class_names=list(names))


def test_registered_by_name_with_one_unknown_name_error():
    assert runtime_task("classification").name == "classification"
    assert list(TASKS) == ["segmentation", "classification"]
    with pytest.raises(ConfigError, match=r"Unknown task `detect`; valid names: \['classification', "
                                          r"'segmentation'\]\. Received: 'detect'"):
        runtime_task("detect")


def test_model_input_takes_the_centre_slices_as_channels():
    volume = np.arange(5)[:, None, None] * np.ones((5, 4, 6))
    x = model_input(volume, (None, None, None, 3))
    assert x.shape == (1, 4, 6, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # slices 1, 2, 3 around centre 2
    assert model_input(volume, (None, None, None, 1))[0, 0, 0].tolist() == [2.0]
    assert model_input(volume, (None, 5, 4, 6, 1)).shape == (1, 5, 4, 6, 1)  # a 3D model
    with pytest.raises(DataError, match=r"takes 3 slices as channels; the image has 1"):
        model_input(volume[:1], (None, None, None, 3))


def test_decisions_at_the_threshold_or_the_arg_max():
    probs = np.array([[0.2, 0.7], [0.5, 0.1]])
    assert decisions(probs, "sigmoid", 0.5).tolist() == [[0, 1], [1, 0]]
    assert decisions(probs, "softmax", 0.5).tolist() == [[1], [0]]
    assert decisions(np.array([[np.nan]]), "sigmoid", 0.5).tolist() == [[0]]


def test_postprocess_names_the_labels():
    task = runtime_task("classification")
    binary = task.postprocess(np.array([[0.8]]), None, _bundle())
    assert binary["labels"] == ["yes"] and binary["probabilities"] == {"yes": 0.8}
    assert task.postprocess(np.array([[0.3]]), None, _bundle())["labels"] == ["no"]
    multi = task.postprocess(np.array([[0.9, 0.2, 0.6]]), None, _bundle(names=("a", "b", "c")))
    assert multi["labels"] == ["a", "c"]
    soft = task.postprocess(np.array([[0.1, 0.7, 0.2]]), None,
                            _bundle("softmax", names=("a", "b", "c")))
    assert soft["labels"] == ["b"] and soft["probabilities"]["b"] == pytest.approx(0.7)


def test_agreement_counts_label_agreement_flips_and_the_auc_drop():
    rng = np.random.default_rng(0)
    truth = (rng.random(40) < 0.5).astype(float)
    reference = np.clip(truth * 0.6 + rng.random(40) * 0.4, 0, 1)
    candidate = reference.copy()
    flipped = [0, 1, 2]  # none is 0.5, so 1 - p is on the other side of the threshold
    candidate[flipped] = 1.0 - candidate[flipped]  # three decisions cross the threshold
    agreement = ClassificationAgreement(_bundle())
    for i in range(40):
        agreement.add(f"c{i}", reference[i:i + 1, None], candidate[i:i + 1, None], truth[i:i + 1])
    s = agreement.summary()
    assert s["label_agreement"] == pytest.approx(1 - 3 / 40)
    assert s["decision_flip_rate"] == pytest.approx(3 / 40)
    assert s["reference_auc"] == pytest.approx(roc_auc(truth, reference))
    assert s["auc_drop"] == pytest.approx(roc_auc(truth, reference) - roc_auc(truth, candidate))
    checks = agreement.checks(Tolerances(min_label_agreement=1.0, max_auc_drop=0.5, identical_masks=True))
    assert checks == {"label_agreement": False, "identical_labels": False, "auc_drop": True}
    assert agreement.describe("label_agreement", Tolerances()).startswith(
        f"label agreement {1 - 3 / 40:.5f} < tolerance 1")
    assert agreement.columns(Tolerances())["decision flips"] == f"{3 / 40:.5f}"


def test_a_flip_at_the_threshold_within_max_abs_is_a_tie_not_a_disagreement():
    agreement = ClassificationAgreement(_bundle())
    agreement.add("tie", np.array([[0.5 - 6e-8]]), np.array([[0.5 + 1e-9]]))  # 6e-8 from 0.5
    agreement.add("same", np.array([[0.9]]), np.array([[0.9]]))
    s = agreement.summary()
    assert s["label_agreement"] == 0.5 and s["decision_flip_rate"] == 0.5  # raw figures kept
    assert agreement.checks(Tolerances(max_abs=1e-4)) == {"label_agreement": True}
    assert agreement.columns(Tolerances(max_abs=1e-4))["ties"] == "1"
    assert agreement.gated_summary(Tolerances(max_abs=1e-4)) == {"ties": 1, "gated_label_agreement": 1.0}
    # The same flip under a tolerance tighter than its distance to the threshold is a flip.
    assert agreement.checks(Tolerances(max_abs=1e-8)) == {"label_agreement": False}
    assert "0 tie(s)" in agreement.describe("label_agreement", Tolerances(max_abs=1e-8))
    # Identical labels (SavedModel) admit no tie.
    assert agreement.checks(Tolerances(max_abs=1e-4, min_label_agreement=None,
                                       identical_masks=True)) == {"identical_labels": False}
    # A flip far from the threshold is never a tie.
    agreement.add("far", np.array([[0.3]]), np.array([[0.7]]))
    assert agreement.ties(Tolerances(max_abs=1e-4)) == 1
    assert agreement.gated_agreement(Tolerances(max_abs=1e-4)) == pytest.approx(2 / 3)


def test_softmax_tie_is_two_classes_within_twice_max_abs():
    agreement = ClassificationAgreement(_bundle("softmax", names=("a", "b", "c")))
    agreement.add("tie", np.array([[0.4, 0.40015, 0.19985]]), np.array([[0.40015, 0.4, 0.19985]]))
    assert agreement.checks(Tolerances(max_abs=1e-4)) == {"label_agreement": True}
    assert agreement.checks(Tolerances(max_abs=5e-5)) == {"label_agreement": False}


def test_agreement_without_ground_truth_cannot_pass_an_auc_gate():
    agreement = ClassificationAgreement(_bundle())
    agreement.add("a", np.array([[0.9]]), np.array([[0.9]]))
    assert agreement.summary()["auc_drop"] is None
    assert agreement.checks(Tolerances(max_auc_drop=0.01))["auc_drop"] is False
    assert "no ground truth" in agreement.describe("auc_drop", Tolerances(max_auc_drop=0.01))


def test_informative_needs_a_positive_reference_decision():
    task = runtime_task("classification")
    assert not task.informative(np.array([[0.2]]), _bundle())
    assert task.informative(np.array([[0.7]]), _bundle())
    assert not task.informative(np.array([[0.8, 0.2]]), _bundle("softmax"))  # the first class
    assert task.informative(np.array([[0.2, 0.8]]), _bundle("softmax"))


def test_output_spec_checks_the_outputs_and_class_names():
    task = runtime_task("classification")
    spec = task.output_spec((None, 1), ["no", "yes"], {"activation": "sigmoid", "temperature": 1.7})
    assert spec == {"layout": "NC", "shape": [None, 1], "activation": "sigmoid",
                    "meaning": "sigmoid probability of the last class name"}
    assert task.output_spec((None, 3), ["a", "b", "c"], {"activation": "softmax"})["layout"] == "NC"
    with pytest.raises(ConfigError, match=r"must output \(N, C\) probabilities"):
        task.output_spec((None, 8, 8, 1), ["yes"], {})
    with pytest.raises(ConfigError, match=r"`class_names` must be 3 strings"):
        task.output_spec((None, 3), ["a", "b"], {"activation": "sigmoid"})
    with pytest.raises(ConfigError, match=r"softmax needs C >= 2"):
        task.output_spec((None, 1), ["yes"], {"activation": "softmax"})
    with pytest.raises(ConfigError, match=r"`postprocess\['temperature'\]` must be a positive"):
        task.output_spec((None, 1), ["yes"], {"temperature": 0.0})
