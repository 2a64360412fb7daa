"""Calibration of predicted probabilities (numpy only): reliability bins, expected calibration
error, and temperature scaling.

A model is calibrated when, among cases given probability p, a share p is positive. The
reliability bins group cases by predicted probability into equal-width bins and compare the mean
prediction of each bin with the observed frequency; the expected calibration error (ECE) is the
case-weighted mean gap. Temperature scaling divides the logits by one fitted number T (T > 1
softens an over-confident model) and never changes the ranking of cases, so AUC is unchanged; the
fit lives in `kerasmed.evaluation.calibration.fit_temperature`, and a device applies it with
`apply_temperature`.

The functions here take binary form, element by element: `prob` is the probability of an event
and `y_true` whether it happened. That covers a binary output `(N,)` and a multi-label output
`(N, C)` (every case-class pair). For a multi-class (softmax) output, `top_label` gives the usual
top-label form: the confidence of the predicted class and whether it was right.
"""

from __future__ import annotations

import numpy as np

from serving.errors import ConfigError, DataError
from serving.metrics.roc import as_binary_labels, as_scores

ACTIVATIONS = ("sigmoid", "softmax")

# Probabilities are clipped to [EPS, 1 - EPS] before taking logits: a float32 sigmoid saturates
# to exactly 0 or 1 beyond |logit| ~ 17, whose logit would be infinite. log((1 - 1e-7) / 1e-7) is
# about 16.1, the same range.
EPS = 1e-7


def _probabilities(prob, what: str = "`prob`") -> np.ndarray:
    values = as_scores(prob, what)
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise DataError(f"{what} must hold probabilities in [0, 1]. Received: values from "
                        f"{values.min():.6g} to {values.max():.6g}")
    return values


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"`bins` must be a positive integer, e.g. 10. Received: bins={bins!r}")
    return int(bins)


def _check_activation(activation) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"`activation` must be one of {', '.join(map(repr, ACTIVATIONS))}. "
                          f"Received: activation={activation!r}")
    return activation


def reliability_bins(y_true, prob, bins: int = 10) -> dict:
    """Equal-width reliability bins of predicted probabilities.

    Args:
        y_true: labels of any shape, 0/1 or bool: whether each event happened.
        prob: predicted probabilities of the events, the same shape, in [0, 1].
        bins: the number of bins; bin i holds `i / bins <= p < (i + 1) / bins` (as computed by
            `floor(p * bins)`), and the last bin also holds p = 1.

    Returns:
        A dict of numpy arrays: `edges` `(bins + 1,)`; per bin `(bins,)`: `confidence` (mean
        predicted probability), `frequency` (observed share of events) and `count` (int64).
        An empty bin has count 0 and NaN confidence and frequency.

    Raises:
        ConfigError: if `bins` is not a positive integer.
        DataError: if the shapes differ, the arrays are empty, a label is not 0/1, or a
            probability is not finite or outside [0, 1].
    """
    n_bins = _check_bins(bins)
    labels = as_binary_labels(y_true).ravel()
    probs = _probabilities(prob)
    if np.shape(y_true) != probs.shape or probs.size == 0:
        raise DataError("`y_true` and `prob` must be non-empty arrays of one shape. "
                        f"Received: {np.shape(y_true)} and {probs.shape}")
    probs = probs.ravel()
    index = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN, by design
        confidence = np.bincount(index, weights=probs, minlength=n_bins) / count
        frequency = np.bincount(index, weights=labels, minlength=n_bins) / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "confidence": confidence,
            "frequency": frequency, "count": count.astype(np.int64)}


def calibration_error(bins: dict) -> float:
    """The expected calibration error of `reliability_bins`' result: the mean over cases of
    `|frequency - confidence|` of their bin (empty bins weigh nothing)."""
    count = np.asarray(bins["count"])
    filled = count > 0
    gap = np.abs(np.asarray(bins["frequency"])[filled] - np.asarray(bins["confidence"])[filled])
    return float(np.sum(count[filled] * gap) / np.sum(count))


def expected_calibration_error(y_true, prob, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins: `sum_b (n_b / N) |freq_b - conf_b|`.

    Args:
        y_true, prob, bins: as in `reliability_bins`.

    Returns:
        ECE in [0, 1]; 0 is perfect calibration (at this binning).

    Raises:
        ConfigError, DataError: as in `reliability_bins`.
    """
    return calibration_error(reliability_bins(y_true, prob, bins))


def top_label(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    """The top-label form of a multi-class output, for `reliability_bins`.

    Args:
        y_true: `(N,)` integer class indices, or `(N, C)` one-hot labels.
        probs: `(N, C)` class probabilities (softmax rows).

    Returns:
        `(correct, confidence)`: `(N,)` bool, whether the most probable class is the true one,
        and `(N,)` float64, its probability.

    Raises:
        DataError: if `probs` is not `(N, C)` probabilities, or `y_true` is neither `(N,)`
            indices in [0, C) nor `(N, C)` one-hot rows.
    """
    p = _probabilities(probs, "`probs`")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise DataError(f"`probs` must be (N, C) class probabilities with C >= 2. "
                        f"Received: shape {p.shape}")
    truth = class_indices(y_true, p.shape)
    predicted = np.argmax(p, axis=1)
    return predicted == truth, p[np.arange(p.shape[0]), predicted]


def class_indices(y_true, shape: tuple[int, int]) -> np.ndarray:
    """`(N,)` int64 class indices from `(N,)` indices or `(N, C)` one-hot rows.

    Args:
        y_true: `(N,)` integer class indices, or `(N, C)` one-hot labels.
        shape: `(N, C)`, the shape of the matching probabilities.

    Raises:
        DataError: if `y_true` is neither, or an index is outside [0, C), or a one-hot row does
            not hold exactly one 1.
    """
    y = np.asarray(y_true)
    if y.shape == shape:
        onehot = as_binary_labels(y, "`y_true` (one-hot)")
        if not np.all(onehot.sum(axis=1) == 1):
            raise DataError("`y_true` given as (N, C) must have exactly one 1 per row (one-hot). "
                            f"Received: row sums {np.unique(onehot.sum(axis=1)).tolist()}")
        return np.argmax(onehot, axis=1)
    if y.shape != shape[:1] or y.dtype.kind not in "iu" or y.size and (
            y.min() < 0 or y.max() >= shape[1]):
        raise DataError(f"`y_true` must be ({shape[0]},) class indices in [0, {shape[1]}) or "
                        f"{shape} one-hot rows. Received: shape {y.shape}, dtype {y.dtype}")
    return y.astype(np.int64)


def logits_from_probabilities(probs, activation: str) -> np.ndarray:
    """Logits that give back `probs` under `activation`, with clipping at `EPS`.

    Args:
        probs: probabilities in [0, 1]; for "softmax", `(..., C)` rows.
        activation: "sigmoid" (`log(p / (1 - p))`) or "softmax" (`log p`, which differs from the
            model's logits by a constant per row, to which softmax is blind).

    Returns:
        float64 logits of the same shape.

    Raises:
        ConfigError: for an unknown activation.
        DataError: if `probs` are not finite probabilities.
    """
    _check_activation(activation)
    p = _probabilities(probs, "`probs`")
    if activation == "sigmoid":
        p = np.clip(p, EPS, 1.0 - EPS)
        return np.log(p) - np.log1p(-p)
    return np.log(np.clip(p, EPS, 1.0))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """`1 / (1 + exp(-x))` without overflow."""
    return np.exp(-np.logaddexp(0.0, -x))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum so that exp never overflows."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def apply_temperature(probs_or_logits, temperature: float, activation: str, *,
                      from_logits: bool = False) -> np.ndarray:
    """Temperature-scaled probabilities: `activation(logits / temperature)`.

    Args:
        probs_or_logits: the model's probabilities (default) or logits (`from_logits=True`);
            for "softmax", `(..., C)` with C >= 2.
        temperature: a positive number; 1 changes nothing (up to the clipping of `EPS`).
        activation: "sigmoid" or "softmax".
        from_logits: whether the input holds logits rather than probabilities.

    Returns:
        Probabilities of the same shape, in the input's float dtype (float64 for integers).

    Raises:
        ConfigError: if `temperature` is not a positive finite number, or the activation is
            unknown.
        DataError: if the input is not finite, probabilities are outside [0, 1], or a softmax
            input has fewer than two classes on its last axis.

    Example:
        >>> apply_temperature(np.array([0.9]), 2.0, "sigmoid")  # logit 2.197 -> 1.099
        array([0.75])
    """
    t = float(temperature)
    if not (np.isfinite(t) and t > 0.0):
        raise ConfigError("`temperature` must be a positive finite number. "
                          f"Received: temperature={temperature!r}")
    _check_activation(activation)
    values = as_scores(probs_or_logits, "`probs_or_logits`")
    if activation == "softmax" and (values.ndim == 0 or values.shape[-1] < 2):
        raise DataError("A softmax output must have at least two classes on its last axis. "
                        f"Received: shape {values.shape}")
    logits = values if from_logits else logits_from_probabilities(values, activation)
    scaled = sigmoid(logits / t) if activation == "sigmoid" else softmax(logits / t)
    dtype = np.asarray(probs_or_logits).dtype
    return scaled.astype(dtype if dtype.kind == "f" else np.float64, copy=False)
