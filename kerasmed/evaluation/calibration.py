"""Temperature scaling fitted on validation predictions (Guo et al., 2017).

One number T divides the logits of every case: T > 1 softens an over-confident model, T < 1
sharpens an under-confident one, and the ranking of cases (so AUC) never changes. T is the value
that minimises the negative log-likelihood (NLL) of the validation labels. The NLL is convex in
1 / T (a logistic or softmax regression on the logits with one scale parameter), so it has one
minimum, found by a bounded Brent search over log T: a multiplicative scale is searched evenly
on both sides of 1 (halving and doubling are the same step). The device applies it with
`serving.metrics.calibration.apply_temperature`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from serving.errors import ConfigError, DataError
from serving.metrics.calibration import class_indices, logits_from_probabilities
from serving.metrics.roc import as_binary_labels, as_scores

# Wide enough for any model seen in practice (T is usually 1 to 3); the fit returns a bound when
# the data push past it, e.g. a validation set that the model separates perfectly (T -> 0).
DEFAULT_BOUNDS = (0.05, 20.0)


def _logits_and_targets(probs, y_true, activation: str, from_logits: bool):
    values = as_scores(probs, "`probs`")
    logits = values if from_logits else logits_from_probabilities(values, activation)
    if values.size == 0:
        raise DataError(f"`probs` must hold at least one prediction. Received: shape {values.shape}")
    if activation == "sigmoid":
        labels = as_binary_labels(y_true)
        if labels.shape != values.shape:
            raise DataError("`y_true` must have the shape of `probs` for a sigmoid output (one 0/1 "
                            f"label per probability). Received: {labels.shape} and {values.shape}")
        return logits, labels.astype(np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise DataError("`probs` of a softmax output must be (N, C) with C >= 2. "
                        f"Received: shape {values.shape}")
    return logits, class_indices(y_true, values.shape)


def _nll(logits: np.ndarray, targets: np.ndarray, activation: str, temperature: float) -> float:
    x = logits / temperature
    if activation == "sigmoid":
        # -log sigmoid(x) = log(1 + e^-x) and -log(1 - sigmoid(x)) = log(1 + e^x), without overflow.
        return float(np.mean(targets * np.logaddexp(0.0, -x) + (1.0 - targets) * np.logaddexp(0.0, x)))
    return float(np.mean(logsumexp(x, axis=1) - x[np.arange(x.shape[0]), targets]))


def negative_log_likelihood(probs, y_true, activation: str, temperature: float = 1.0, *,
                            from_logits: bool = False) -> float:
    """Mean negative log-likelihood of the labels under temperature-scaled predictions.

    Args:
        probs: the model's outputs: probabilities (default) or logits (`from_logits=True`).
            "sigmoid": any shape (binary `(N,)` or multi-label `(N, C)`); "softmax": `(N, C)`.
        y_true: "sigmoid": 0/1 labels of the shape of `probs`; "softmax": `(N,)` class indices
            or `(N, C)` one-hot rows.
        activation: "sigmoid" (binary cross-entropy averaged over every element) or "softmax"
            (categorical cross-entropy averaged over cases).
        temperature: the positive divisor of the logits.
        from_logits: whether `probs` holds logits.

    Returns:
        The mean NLL in nats; probabilities are clipped at `serving.metrics.calibration.EPS`.

    Raises:
        ConfigError: for an unknown activation or a non-positive temperature.
        DataError: if the predictions or labels are malformed (see `fit_temperature`).
    """
    if activation not in ("sigmoid", "softmax"):
        raise ConfigError("`activation` must be one of 'sigmoid', 'softmax'. "
                          f"Received: activation={activation!r}")
    if not (np.isfinite(float(temperature)) and float(temperature) > 0.0):
        raise ConfigError("`temperature` must be a positive finite number. "
                          f"Received: temperature={temperature!r}")
    logits, targets = _logits_and_targets(probs, y_true, activation, from_logits)
    return _nll(logits, targets, activation, float(temperature))


def fit_temperature(probs, y_true, activation: str, *, from_logits: bool = False,
                    bounds: tuple[float, float] = DEFAULT_BOUNDS) -> float:
    """The temperature that minimises the negative log-likelihood of validation predictions.

    Fit it on validation predictions, never on the test set that reports calibration.

    Args:
        probs: the model's validation outputs: probabilities (default) or logits
            (`from_logits=True`). "sigmoid": any shape, e.g. `(N,)` or multi-label `(N, C)`
            (one temperature for every class); "softmax": `(N, C)`.
        y_true: "sigmoid": 0/1 labels of the shape of `probs`; "softmax": `(N,)` class indices
            or `(N, C)` one-hot rows.
        activation: "sigmoid" or "softmax", the model's output activation.
        from_logits: whether `probs` holds logits.
        bounds: `(low, high)`, the search interval of T, `0 < low < 1 < high`. A result at a
            bound (within the search tolerance) means the data push past it.

    Returns:
        T, to pass to `apply_temperature`; the search stops when log T is known within 1e-5.

    Raises:
        ConfigError: for an unknown activation or invalid bounds.
        DataError: if the predictions are empty or not finite, probabilities fall outside
            [0, 1], or the labels do not match the predictions.

    Example:
        >>> t = fit_temperature(val_probs, val_labels, "softmax")
        >>> calibrated = apply_temperature(test_probs, t, "softmax")
    """
    if activation not in ("sigmoid", "softmax"):
        raise ConfigError("`activation` must be one of 'sigmoid', 'softmax'. "
                          f"Received: activation={activation!r}")
    low, high = (float(b) for b in bounds)
    if not (np.isfinite(high) and 0.0 < low < 1.0 < high):
        raise ConfigError(f"`bounds` must be (low, high) with 0 < low < 1 < high. Received: "
                          f"bounds={bounds!r}")
    logits, targets = _logits_and_targets(probs, y_true, activation, from_logits)
    result = minimize_scalar(lambda log_t: _nll(logits, targets, activation, float(np.exp(log_t))),
                             bounds=(np.log(low), np.log(high)), method="bounded",
                             options={"xatol": 1e-5})
    return float(np.exp(result.x))


def bound_reached(temperature: float, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> float | None:
    """The bound of `bounds` that a fitted temperature stopped at (within 0.1 %), else None.

    A fit at the upper bound means the predictions carry almost no information about the labels
    (the NLL keeps falling as every probability moves to the same value); at the lower bound,
    that they separate the labels perfectly (it keeps falling as they sharpen). Either way the
    temperature is no calibration.
    """
    for bound in bounds:
        if abs(np.log(float(temperature)) - np.log(float(bound))) < 1e-3:
            return float(bound)
    return None
