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
        identical_masks: whether every case's mask must equal the Keras mask exactly.
    """

    max_abs: float | None = 1e-4
    min_dice_agreement: float | None = 0.999
    identical_masks: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# DESIGN.md: SavedModel 1e-5 and identical masks; ONNX/TFLite fp32 1e-4 and Dice agreement 0.999;
# fp16 1e-2 and 0.99; int8 not gated element-wise, Dice agreement 0.95.
DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    "saved_model": Tolerances(max_abs=1e-5, min_dice_agreement=None, identical_masks=True),
    "onnx": Tolerances(max_abs=1e-4, min_dice_agreement=0.999),
    "tflite": Tolerances(max_abs=1e-4, min_dice_agreement=0.999),
    "tflite_fp16": Tolerances(max_abs=1e-2, min_dice_agreement=0.99),
    "onnx_fp16": Tolerances(max_abs=1e-2, min_dice_agreement=0.99),
    "int8": Tolerances(max_abs=None, min_dice_agreement=0.95),
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
