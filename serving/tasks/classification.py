"""Classification, runtime side: one image in, class probabilities and labels out.

Model contract: input `(N, H, W, K)` float32 raw intensities (K slices of a 2.5D patch, or 1) or
`(N, D, H, W, 1)` for a 3D model (the bundle's input shape says which); output `(N, C)`
probabilities, the manifest's `output.activation` says how to read them:

- `sigmoid`, C = 1: binary, the probability of the positive class (the last class name);
- `sigmoid`, C > 1: multi-label, one independent probability per finding;
- `softmax`, C > 1: multi-class, one label per image.

The decision at the operating point is `p >= postprocessing.threshold` for sigmoid outputs and
the arg-max class for softmax. A bundle whose model was temperature-scaled records the
temperature (`postprocessing.temperature`): the graph already divides its logits by it, so the
outputs here are the calibrated probabilities.

Parity's agreement: the share of cases whose labels equal the reference's (label agreement), the
share of single decisions that flip (decision-flip rate: one per finding, or one per case for
softmax), and, when given the ground truth, the AUC of each against it and their difference.

A flip is a *tie* when the reference itself sits within the artefact's element-wise tolerance of
the decision boundary: a sigmoid probability within `max_abs` of the threshold, or two softmax
classes within `2 * max_abs` of each other. An artefact within tolerance may then land on either
side (one fp32 TFLite case with |p - threshold| = 6e-8 did, on a Zen 3), so the gated label
agreement counts ties as agreeing; the report still gives the raw figure and the number of ties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving.atomic import atomic_write_text
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.metrics import macro_auc, roc_auc
from serving.preprocessing import preprocess
from serving.tasks.base_task import Agreement, CaseInputs, RuntimeTask, check_class_names

ACTIVATIONS = ("sigmoid", "softmax")


def model_input(volume: np.ndarray, input_shape) -> np.ndarray:
    """One preprocessed `(Z, H, W)` volume as the model's input batch of one.

    A 2D model taking K channels gets the K slices around the centre, as channels (a one-slice
    image repeated when K > 1 would be a different image: refused); a 3D model gets the volume.

    Raises:
        DataError: if the volume has fewer slices than the model takes.
    """
    if len(input_shape) == 5:
        return np.ascontiguousarray(volume[None, ..., None], dtype=np.float32)
    k = int(input_shape[-1] or 1)
    if volume.shape[0] < k:
        raise DataError(
            f"The model takes {k} slices as channels; the image has {volume.shape[0]}. "
            f"Received: preprocessed shape {volume.shape}"
        )
    start = volume.shape[0] // 2 - k // 2
    return np.ascontiguousarray(np.moveaxis(volume[start:start + k], 0, -1)[None], dtype=np.float32)


def decisions(probs: np.ndarray, activation: str, threshold: float) -> np.ndarray:
    """Per-case decisions `(N, D)` as integers: `p >= threshold` per sigmoid output, the arg-max
    class (D = 1) for softmax."""
    probs = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
    if activation == "softmax":
        return np.argmax(probs, axis=-1)[:, None]
    return (probs >= threshold).astype(np.int64)


def _flip_margin(reference, ref_decisions, cand_decisions, activation, threshold) -> float:
    """The reference's largest distance to the decision boundary among one case's flips: |p -
    threshold| for a sigmoid output, half the gap between the two classes' probabilities for
    softmax (so that both compare with the same `max_abs`)."""
    probs = np.nan_to_num(np.asarray(reference, np.float64).reshape(-1), nan=0.0)
    if activation == "softmax":
        return float(probs[ref_decisions[0, 0]] - probs[cand_decisions[0, 0]]) / 2
    flipped = (ref_decisions != cand_decisions).reshape(-1)
    return float(np.max(np.abs(probs[flipped] - threshold)))


def _activation(bundle) -> str:
    return bundle.manifest["output"].get("activation", "sigmoid")


def task_auc(truth: np.ndarray, scores: np.ndarray, activation: str) -> float:
    """AUC of `(N, C)` scores against `(N, C)` 0/1 truth: binary AUC for C = 1, the one-vs-rest
    macro AUC otherwise (classes present in one value only are left out)."""
    if scores.shape[1] == 1:
        return roc_auc(truth[:, 0], scores[:, 0])
    return macro_auc(truth, scores)[0]


class ClassificationAgreement(Agreement):
    """Label agreement, decision flips and AUC difference of one artefact (module docstring)."""

    tolerance_fields: ClassVar[tuple[str, ...]] = (
        "min_label_agreement", "identical_masks", "max_auc_drop")

    def __init__(self, bundle):
        super().__init__(bundle)
        self.flips = self.decisions = 0
        self.reference, self.candidate, self.truth = [], [], []
        # Per case with a flip: the reference's largest distance to the decision boundary among
        # its flipped decisions (a tie when within the artefact's tolerance, module docstring).
        self.flip_margin: dict[str, float] = {}

    def add(self, case_id, reference, candidate, truth=None) -> None:
        if candidate.shape != reference.shape:
            self.per_case[case_id] = 0.0
            return
        activation, threshold = _activation(self.bundle), self.bundle.threshold
        ref, cand = decisions(reference, activation, threshold), decisions(candidate, activation, threshold)
        self.per_case[case_id] = float(np.array_equal(ref, cand))
        self.flips += int(np.count_nonzero(ref != cand))
        self.decisions += ref.size
        if not self.per_case[case_id]:
            self.flip_margin[case_id] = _flip_margin(reference, ref, cand, activation, threshold)
        if truth is not None:
            self.reference.append(np.asarray(reference, np.float64).reshape(1, -1))
            self.candidate.append(np.nan_to_num(np.asarray(candidate, np.float64)).reshape(1, -1))
            self.truth.append(np.asarray(truth, np.float64).reshape(1, -1))

    def _aucs(self) -> tuple[float | None, float | None]:
        if not self.truth:
            return None, None
        truth = np.concatenate(self.truth)
        activation = _activation(self.bundle)
        try:
            return (task_auc(truth, np.concatenate(self.reference), activation),
                    task_auc(truth, np.concatenate(self.candidate), activation))
        except (DataError, ValueError):  # one class only among the cases: no AUC
            return None, None

    def summary(self) -> dict[str, Any]:
        scores = list(self.per_case.values())
        reference_auc, candidate_auc = self._aucs()
        return {
            "label_agreement": float(np.mean(scores)) if scores else 0.0,
            "labels_identical": bool(scores) and min(scores) == 1.0,
            "decision_flip_rate": self.flips / self.decisions if self.decisions else 0.0,
            "reference_auc": reference_auc,
            "auc": candidate_auc,
            "auc_drop": None if reference_auc is None else reference_auc - candidate_auc,
        }

    def ties(self, tolerances) -> int:
        """Cases whose every flip is a tie under `tolerances.max_abs` (module docstring)."""
        if tolerances.max_abs is None:
            return 0
        return sum(m <= tolerances.max_abs for m in self.flip_margin.values())

    def gated_agreement(self, tolerances) -> float:
        """Label agreement with ties counted as agreeing: what `min_label_agreement` bounds."""
        if not self.per_case:
            return 0.0
        return (sum(self.per_case.values()) + self.ties(tolerances)) / len(self.per_case)

    def gated_summary(self, tolerances) -> dict[str, Any]:
        return {"ties": self.ties(tolerances), "gated_label_agreement": self.gated_agreement(tolerances)}

    def checks(self, tolerances) -> dict[str, bool]:
        s, out = self.summary(), {}
        if tolerances.min_label_agreement is not None:
            out["label_agreement"] = self.gated_agreement(tolerances) >= tolerances.min_label_agreement
        if tolerances.identical_masks:
            out["identical_labels"] = s["labels_identical"]
        if tolerances.max_auc_drop is not None:
            # Without the ground truth there is no AUC to compare: the gate cannot pass.
            out["auc_drop"] = s["auc_drop"] is not None and s["auc_drop"] <= tolerances.max_auc_drop
        return out

    def describe(self, check, tolerances) -> str:
        s = self.summary()
        if check == "label_agreement":
            return (f"label agreement {self.gated_agreement(tolerances):.5f} < tolerance "
                    f"{tolerances.min_label_agreement:g} (decision-flip rate "
                    f"{s['decision_flip_rate']:.5f}; {self.ties(tolerances)} tie(s) within "
                    f"max_abs of the boundary counted as agreeing)")
        if check == "identical_labels":
            return "labels differ from the Keras labels, which must be identical"
        if s["auc_drop"] is None:
            return "AUC drop not measured: parity was given no ground truth with both classes"
        return f"AUC drop {s['auc_drop']:.5f} > tolerance {tolerances.max_auc_drop:g}"

    def columns(self, tolerances) -> dict[str, str]:
        s, tol = self.summary(), tolerances.min_label_agreement
        return {
            "label agr.": f"{s['label_agreement']:.5f}",
            "label tol.": "-" if tol is None else f"{tol:g}",
            "decision flips": f"{s['decision_flip_rate']:.5f}",
            "ties": str(self.ties(tolerances)),
            "AUC drop": "-" if s["auc_drop"] is None else f"{s['auc_drop']:+.5f}",
        }


class Classification(RuntimeTask):
    """See the module docstring."""

    name = "classification"
    postprocess_defaults: ClassVar[dict[str, Any]] = {"threshold": 0.5, "activation": "sigmoid"}

    def inputs(self, image: Image, bundle, batch_size: int = 8) -> CaseInputs:
        image = image.as_volume()
        image.require_grey("Classification (`predict`, parity)")
        volume, record = preprocess(image, bundle.preprocess_spec)
        return CaseInputs([model_input(volume, bundle.manifest["input"]["shape"])], record, image)

    def postprocess(self, output, inputs, bundle) -> dict[str, Any]:
        activation, threshold = _activation(bundle), bundle.threshold
        probs = np.asarray(output, np.float64)[0]
        names = bundle.class_names
        if activation == "softmax":
            labels = [names[int(np.argmax(probs))]]
            scores = dict(zip(names, probs.tolist()))
        elif probs.size == 1:
            labels = [names[-1]] if probs[0] >= threshold else ([names[0]] if len(names) == 2 else [])
            scores = {names[-1]: float(probs[0])}
        else:
            labels = [n for n, p in zip(names, probs) if p >= threshold]
            scores = dict(zip(names, probs.tolist()))
        return {"labels": labels, "probabilities": scores, "threshold": threshold,
                "activation": activation}

    def informative(self, reference, bundle) -> bool:
        # A positive decision (or a class other than the first): agreement on an all-negative
        # set of golden cases would say nothing about the positive side of the threshold.
        return bool(decisions(reference, _activation(bundle), bundle.threshold).any())

    def agreement(self, bundle) -> ClassificationAgreement:
        return ClassificationAgreement(bundle)

    def output_spec(self, shape, class_names, postprocess) -> dict[str, Any]:
        activation = postprocess.get("activation", "sigmoid")
        if len(shape) != 2:
            raise ConfigError(
                f"A classifier must output (N, C) probabilities. Received: output shape {list(shape)}"
            )
        channels = shape[-1]
        if activation not in ACTIVATIONS or (activation == "softmax" and channels < 2):
            raise ConfigError(
                f"`postprocess['activation']` must be one of {ACTIVATIONS} (softmax needs C >= 2). "
                f"Received: {activation!r} for {channels} output(s)"
            )
        check_class_names(class_names, channels, f"a classifier with {channels} output(s)")
        temperature = postprocess.get("temperature", 1.0)
        if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
            raise ConfigError(
                f"`postprocess['temperature']` must be a positive number. Received: {temperature!r}"
            )
        meaning = {("sigmoid", True): "sigmoid probability of the last class name",
                   ("sigmoid", False): "sigmoid probability per finding (multi-label)",
                   ("softmax", False): "softmax class probabilities"}[(activation, channels == 1)]
        return {"layout": "NC", "shape": [None, channels], "activation": activation,
                "meaning": meaning}

    def write(self, result, out_dir, stem) -> list[Path]:
        path = Path(out_dir) / f"{stem}_classification.json"
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
        return [path]
