"""Parity tolerances: what each kind of artefact must meet against the Keras reference.

The defaults are DESIGN.md's "Defaults that the whole project shares"; every call can override
them by artefact key or kind (`resolve_tolerances`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from serving.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Pass criteria for one kind of artefact.

    Args:
        max_abs: bound on the max abs error of the probabilities; None = reported, not gated.
        min_dice_agreement: bound on the mean (over cases) Dice between the artefact's mask and
            the Keras mask; None = reported, not gated.
        identical_masks: whether every case's result must equal the Keras result exactly (the
            mask for segmentation, the labels for classification).
        min_label_agreement: classification: bound on the share of cases whose labels at the
            operating point equal the Keras labels, a flip where the Keras output itself lies
            within `max_abs` of the decision boundary counting as a tie that agrees
            (`serving.tasks.classification`); None = reported, not gated.
        max_auc_drop: classification: bound on (Keras AUC - artefact AUC) against the ground
            truth, when parity is given it; None = reported, not gated.

    Each task gates on its own fields (`serving.tasks.base_task.Agreement.tolerance_fields`)
    and ignores the others'.
    """

    max_abs: float | None = 1e-4
    min_dice_agreement: float | None = 0.999
    identical_masks: bool = False
    min_label_agreement: float | None = 1.0
    max_auc_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# DESIGN.md: SavedModel 1e-5 and identical masks and labels; ONNX/TFLite fp32 1e-4, Dice agreement
# 0.999 and label agreement 100%; fp16 1e-2 and Dice agreement 0.99 (labels: 99%, our choice: the
# table names none); int8 not gated element-wise, Dice agreement 0.95 and AUC drop 0.01.
DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    "saved_model": Tolerances(max_abs=1e-5, min_dice_agreement=None, identical_masks=True,
                              min_label_agreement=None),
    "onnx": Tolerances(max_abs=1e-4, min_dice_agreement=0.999, min_label_agreement=1.0),
    "tflite": Tolerances(max_abs=1e-4, min_dice_agreement=0.999, min_label_agreement=1.0),
    "tflite_fp16": Tolerances(max_abs=1e-2, min_dice_agreement=0.99, min_label_agreement=0.99),
    "onnx_fp16": Tolerances(max_abs=1e-2, min_dice_agreement=0.99, min_label_agreement=0.99),
    "int8": Tolerances(max_abs=None, min_dice_agreement=0.95, min_label_agreement=None,
                       max_auc_drop=0.01),
}


def artefact_kind(entry: Mapping[str, Any]) -> str:
    """Tolerance kind of an artefact entry: "saved_model", "onnx", "tflite_fp16", "int8", ..."""
    precision = entry.get("precision", "fp32")
    if precision == "int8":
        return "int8"
    if precision != "fp32":
        return f"{entry['format']}_{precision}"
    return entry["format"]


Overrides = Tolerances | Mapping[str, Tolerances | Mapping[str, Any]]


def resolve_tolerances(entry: Mapping[str, Any], overrides: Overrides | None = None) -> Tolerances:
    """Tolerances for one artefact: an override for its key, else for its kind, else the default.

    `overrides` is one `Tolerances` for every artefact, or a mapping by artefact key or kind
    whose dict values replace only the fields they name.

    Raises:
        ConfigError: if neither the artefact key nor its kind has tolerances.
    """
    if isinstance(overrides, Tolerances):
        return overrides
    key, kind = entry.get("key", entry["format"]), artefact_kind(entry)
    overrides = dict(overrides or {})
    base = DEFAULT_TOLERANCES.get(kind)
    for name in (kind, key):
        if name not in overrides:
            continue
        value = overrides[name]
        if isinstance(value, Tolerances):
            base = value
        else:
            base = dataclasses.replace(base or Tolerances(), **dict(value))
    if base is None:
        raise ConfigError(
            f"No tolerances for artefact `{key}` (kind `{kind}`); known kinds: "
            f"{sorted(DEFAULT_TOLERANCES)}. Received: tolerances keys={sorted(overrides)}"
        )
    return base
