"""Binary ROC and precision-recall analysis from scores, with ties handled exactly (numpy only).

Convention: a case is called positive when `score >= threshold`. Cases with equal scores always
fall on the same side of a threshold, so a curve has one point per distinct score, never a point
that splits a tie in an order the data do not give.

- `roc_curve`, `roc_auc`: the ROC curve and its area in the rank (Mann-Whitney) form, where a tied
  positive-negative pair counts one half;
- `pr_curve`, `average_precision`: the precision-recall curve and its step-wise area, as
  scikit-learn defines them;
- `bootstrap_ci`: a percentile bootstrap confidence interval of any of these over cases;
- `threshold_for_sensitivity`, `confusion_at`: an operating point and the counts and rates at it;
- `macro_auc`: one-vs-rest AUC per class and their mean, for multi-class and multi-label outputs.

Labels may be bool, or integers or floats equal to 0 and 1; anything else is refused, as are
non-finite scores and arrays of different lengths, with a `DataError` that names the argument.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from serving.array_checks import as_real_array, require_finite
from serving.errors import ConfigError, DataError


def as_binary_labels(y_true, what: str = "`y_true`") -> np.ndarray:
    """Labels as a boolean array, refusing values other than 0 and 1.

    Args:
        y_true: labels of any shape: bool, or integers or floats equal to 0 or 1.
        what: how an error names the argument.

    Returns:
        A bool array of the same shape.

    Raises:
        DataError: if the labels are not real numbers, or hold a value other than 0 and 1.
    """
    labels = as_real_array(y_true, what)
    if labels.dtype.kind == "b":
        return labels
    require_finite(labels, what)
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        raise DataError(f"{what} must hold only 0 and 1 (or bool). Received: values "
                        f"{np.unique(labels[bad])[:5].tolist()} in a {labels.shape} array")
    return labels == 1


def as_scores(score, what: str = "`score`") -> np.ndarray:
    """Scores as a finite float64 array (the shape is kept).

    Raises:
        DataError: if the scores are not real numbers, or hold NaN or an infinity.
    """
    values = as_real_array(score, what)
    require_finite(values, what)
    return values.astype(np.float64, copy=False)


def binary_inputs(y_true, score, *, positives: bool = True,
                  negatives: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checked 1-D labels and scores of one length.

    Args:
        y_true: `(N,)` labels, 0/1 or bool.
        score: `(N,)` scores, any finite real numbers (higher means more likely positive).
        positives, negatives: whether at least one case of that class is required.

    Returns:
        `(labels, scores)`: `(N,)` bool and `(N,)` float64 arrays.

    Raises:
        DataError: if an array is not 1-D, the lengths differ, an array is empty, a score is not
            finite, a label is not 0/1, or a required class is absent.
    """
    labels, scores = as_binary_labels(y_true), as_scores(score)
    for name, array in (("y_true", labels), ("score", scores)):
        if array.ndim != 1 or array.size == 0:
            raise DataError(f"`{name}` must be a non-empty 1-D array (one value per case). "
                            f"Received: shape {array.shape}")
    if labels.shape != scores.shape:
        raise DataError("`y_true` and `score` must have one value per case, the same length. "
                        f"Received: {labels.size} labels and {scores.size} scores")
    n_pos = int(np.count_nonzero(labels))
    if (positives and n_pos == 0) or (negatives and n_pos == labels.size):
        missing = "positive" if n_pos == 0 else "negative"
        raise DataError(f"`y_true` must contain at least one {missing} case for this metric. "
                        f"Received: {n_pos} positive and {labels.size - n_pos} negative cases")
    return labels, scores


def _counts_by_threshold(labels: np.ndarray, scores: np.ndarray):
    """True and false positive counts at each distinct score, taken as a threshold, descending."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # The last index of each run of equal scores: a threshold admits a tie as a whole.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = np.cumsum(sorted_labels)[last]
    fp = last + 1 - tp
    return tp, fp, sorted_scores[last]


def roc_curve(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve, one point per distinct score plus the origin.

    Args:
        y_true: `(N,)` labels, 0/1 or bool, with both classes present.
        score: `(N,)` finite scores.

    Returns:
        `(fpr, tpr, thresholds)`, each `(K + 1,)` for K distinct scores: thresholds decrease from
        `+inf` (nothing called positive, the point (0, 0)) to the lowest score (everything called
        positive, the point (1, 1)); `fpr[i]` and `tpr[i]` are the rates when
        `score >= thresholds[i]` is called positive. This is scikit-learn's
        `roc_curve(..., drop_intermediate=False)`.

    Raises:
        DataError: see `binary_inputs`; both classes must be present.
    """
    labels, scores = binary_inputs(y_true, score)
    tp, fp, thresholds = _counts_by_threshold(labels, scores)
    n_pos = tp[-1]
    n_neg = fp[-1]
    return (np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, thresholds])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]  # exclusive
    # A run of ranks start+1 .. end has mean (start + 1 + end) / 2.
    mean_rank = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank
    return ranks


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve: the probability that a random positive case scores higher than a
    random negative one, a tie counting one half (the Mann-Whitney U statistic over
    `n_pos * n_neg`). It equals the trapezoidal area under `roc_curve`.

    Args:
        y_true: `(N,)` labels, 0/1 or bool, with both classes present.
        score: `(N,)` finite scores.

    Returns:
        AUC in [0, 1], never NaN.

    Raises:
        DataError: if only one class is present, the scores are not finite, or the lengths
            differ (see `binary_inputs`).

    Example:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8])  # one tied pair of four: (3 + 0.5) / 4
        0.875
    """
    labels, scores = binary_inputs(y_true, score)
    ranks = _average_ranks(scores)
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_curve(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision-recall curve, one point per distinct score.

    Args:
        y_true: `(N,)` labels, 0/1 or bool, with at least one positive.
        score: `(N,)` finite scores.

    Returns:
        `(precision, recall, thresholds)`, each `(K,)` for K distinct scores, thresholds
        decreasing from the highest score to the lowest, so recall rises to 1. Every threshold is
        a score, so at least one case is called positive and precision is always defined. No
        point is added at recall 0: scikit-learn's `precision_recall_curve` returns the same
        points in the reverse order, plus a final (precision 1, recall 0) point with no threshold.

    Raises:
        DataError: see `binary_inputs`; at least one positive is required (negatives are not).
    """
    labels, scores = binary_inputs(y_true, score, negatives=False)
    tp, fp, thresholds = _counts_by_threshold(labels, scores)
    return tp / (tp + fp), tp / tp[-1], thresholds


def average_precision(y_true, score) -> float:
    """Average precision: the precision at each distinct threshold weighted by the recall it
    adds, `sum_k (R_k - R_(k-1)) P_k`, without interpolation (scikit-learn's
    `average_precision_score`).

    Args:
        y_true: `(N,)` labels, 0/1 or bool, with at least one positive.
        score: `(N,)` finite scores.

    Returns:
        AP in [0, 1]; the prevalence is what a random score gets on average.

    Raises:
        DataError: see `binary_inputs`; at least one positive is required.
    """
    precision, recall, _ = pr_curve(y_true, score)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], y_true, score, n: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `metric(y_true, score)` over cases.

    Each resample draws N cases with replacement. A resample that misses a class (all positive
    or all negative) is redrawn, so the interval always rests on `n` resamples on which every
    metric here is defined; the interval is thus conditional on both classes being present,
    which matters only when one class has a handful of cases. At least half of all draws hold
    both classes whenever the data do (the worst case is one case of each class), so redrawing
    at most about doubles the work.

    Args:
        metric: a function of `(labels, scores)` returning a finite float, e.g. `roc_auc` or
            `average_precision`; it receives `(N,)` bool labels and float64 scores.
        y_true: `(N,)` labels, 0/1 or bool, with both classes present.
        score: `(N,)` finite scores.
        n: the number of resamples (at least 1).
        level: the coverage of the interval, in (0, 1).
        seed: the seed of numpy's `default_rng`; one seed gives one interval.

    Returns:
        `(low, high)`: the `(1 - level) / 2` and `(1 + level) / 2` percentiles (numpy's linear
        interpolation) of the metric over the resamples.

    Raises:
        ConfigError: if `n` is not a positive integer or `level` not in (0, 1).
        DataError: see `binary_inputs`; or if `metric` returns a non-finite value.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"`n` (bootstrap resamples) must be a positive integer. Received: n={n!r}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"`level` must be in (0, 1), e.g. 0.95. Received: level={level!r}")
    labels, scores = binary_inputs(y_true, score)
    size = labels.size
    rng = np.random.default_rng(seed)
    values = np.empty(n, dtype=np.float64)
    found = 0
    while found < n:
        # Twice the resamples still needed (some are redrawn), in batches of indices under 32 MB;
        # each batch is scored before the next is drawn, so memory never grows with `n`.
        batch = min(max(2 * (n - found), 16), max(1, 4_000_000 // size))
        idx = rng.integers(0, size, size=(batch, size))
        pos = np.count_nonzero(labels[idx], axis=1)
        for rows in idx[(pos > 0) & (pos < size)][: n - found]:
            values[found] = metric(labels[rows], scores[rows])
            found += 1
    if not np.all(np.isfinite(values)):
        raise DataError(f"`metric` must return a finite value on every resample. Received: "
                        f"{int(np.count_nonzero(~np.isfinite(values)))} non-finite values from "
                        f"{getattr(metric, '__name__', metric)!s}")
    tail = (1.0 - float(level)) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def threshold_for_sensitivity(y_true, score, min_sensitivity: float) -> float:
    """The highest threshold whose sensitivity is at least `min_sensitivity`: the clinically
    usual operating point (catch at least this share of positives, with as few false alarms as
    that allows).

    Sensitivity only falls as the threshold rises, so this is the k-th highest positive score,
    for the smallest k with `k / n_pos >= min_sensitivity`; any higher threshold drops that case.

    Args:
        y_true: `(N,)` labels, 0/1 or bool, with at least one positive.
        score: `(N,)` finite scores.
        min_sensitivity: the required sensitivity, in (0, 1].

    Returns:
        The threshold, one of the scores; `confusion_at(y_true, score, t)["sensitivity"]` is
        at least `min_sensitivity`.

    Raises:
        ConfigError: if `min_sensitivity` is not in (0, 1].
        DataError: see `binary_inputs`; at least one positive is required.
    """
    if not 0.0 < float(min_sensitivity) <= 1.0:
        raise ConfigError("`min_sensitivity` must be in (0, 1]. "
                          f"Received: min_sensitivity={min_sensitivity!r}")
    labels, scores = binary_inputs(y_true, score, negatives=False)
    positive_scores = np.sort(scores[labels])[::-1]
    n_pos = positive_scores.size
    # Compare with the very division `confusion_at` reports (0.7 * 10 is 7.000000000000001).
    sensitivity = np.arange(1, n_pos + 1) / n_pos
    k = int(np.searchsorted(sensitivity, float(min_sensitivity), side="left"))
    return float(positive_scores[min(k, n_pos - 1)])


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def confusion_at(y_true, score, threshold: float) -> dict:
    """Counts and rates when `score >= threshold` is called positive.

    Args:
        y_true: `(N,)` labels, 0/1 or bool (one class alone is allowed).
        score: `(N,)` finite scores.
        threshold: a real number; `+inf` calls nothing positive, `-inf` everything.

    Returns:
        A dict with the counts `tp`, `fp`, `tn`, `fn` (int) and the rates (float)
        `sensitivity` = tp / (tp + fn), `specificity` = tn / (tn + fp), `ppv` = tp / (tp + fp),
        `npv` = tn / (tn + fn), `f1` = 2 tp / (2 tp + fp + fn) and `accuracy` = (tp + tn) / N.
        A rate whose denominator is zero (e.g. `ppv` when nothing is called positive,
        `sensitivity` without positive cases) is NaN, not 0 or 1.

    Raises:
        ConfigError: if `threshold` is NaN.
        DataError: see `binary_inputs`.
    """
    if np.isnan(float(threshold)):
        raise ConfigError(f"`threshold` must be a number. Received: threshold={threshold!r}")
    labels, scores = binary_inputs(y_true, score, positives=False, negatives=False)
    called = scores >= float(threshold)
    tp = int(np.count_nonzero(called & labels))
    fp = int(np.count_nonzero(called & ~labels))
    fn = int(np.count_nonzero(~called & labels))
    tn = labels.size - tp - fp - fn
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": _ratio(tp + tn, labels.size)}


def macro_auc(y_true_onehot, probs) -> tuple[float, list[float]]:
    """One-vs-rest AUC of each class and their unweighted mean.

    Args:
        y_true_onehot: `(N, C)` 0/1 labels: one-hot rows (multi-class) or any number of ones
            per row (multi-label).
        probs: `(N, C)` finite scores, e.g. softmax or sigmoid outputs.

    Returns:
        `(macro, per_class)`: `per_class[c]` is `roc_auc(y_true_onehot[:, c], probs[:, c])`, or
        NaN for a class whose column holds one value only (all present or all absent); `macro`
        is the mean over the other classes (as `mean_dice` leaves absent classes out).

    Raises:
        DataError: if the arrays are not `(N, C)` of one shape, or no class has both positive
            and negative cases.
    """
    labels = as_binary_labels(y_true_onehot, "`y_true_onehot`")
    scores = as_scores(probs, "`probs`")
    if labels.ndim != 2 or labels.shape != scores.shape or labels.size == 0:
        raise DataError("`y_true_onehot` and `probs` must both be non-empty (N, C) arrays of one "
                        f"shape (one-hot labels, not class indices). Received: {labels.shape} and "
                        f"{scores.shape}")
    per_class = []
    for c in range(labels.shape[1]):
        n_pos = int(np.count_nonzero(labels[:, c]))
        defined = 0 < n_pos < labels.shape[0]
        per_class.append(roc_auc(labels[:, c], scores[:, c]) if defined else float("nan"))
    defined_aucs = [a for a in per_class if not np.isnan(a)]
    if not defined_aucs:
        raise DataError("`y_true_onehot` must have at least one class with both positive and "
                        f"negative cases. Received: per-class positives "
                        f"{np.count_nonzero(labels, axis=0).tolist()} of {labels.shape[0]} cases")
    return float(np.mean(defined_aucs)), per_class
