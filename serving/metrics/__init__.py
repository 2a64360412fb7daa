"""Numpy metrics, defined once: training's evaluation, export's parity and a device checking
itself all import them from here (serving needs numpy only).

- `overlap`: Dice of masks and mean Dice over classes;
- `roc`: binary ROC and precision-recall curves, AUC, average precision, bootstrap confidence
  intervals, operating points and the confusion counts at them, one-vs-rest macro AUC;
- `calibration`: reliability bins, expected calibration error, temperature scaling.
"""

from serving.metrics.calibration import (
    apply_temperature,
    calibration_error,
    expected_calibration_error,
    logits_from_probabilities,
    reliability_bins,
    top_label,
)
from serving.metrics.overlap import dice, mean_dice
from serving.metrics.roc import (
    average_precision,
    bootstrap_ci,
    confusion_at,
    macro_auc,
    pr_curve,
    roc_auc,
    roc_curve,
    threshold_for_sensitivity,
)

__all__ = [
    "apply_temperature",
    "average_precision",
    "bootstrap_ci",
    "calibration_error",
    "confusion_at",
    "dice",
    "expected_calibration_error",
    "logits_from_probabilities",
    "macro_auc",
    "mean_dice",
    "pr_curve",
    "reliability_bins",
    "roc_auc",
    "roc_curve",
    "threshold_for_sensitivity",
    "top_label",
]
