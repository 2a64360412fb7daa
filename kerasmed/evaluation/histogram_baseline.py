"""A floor for image classification: logistic regression on intensity histograms.

A classifier that only counts how much of each intensity an image holds (and ignores where) is
what a CNN must beat for its score to mean it learned shape. `histogram_features` turns each
image into its normalised histogram over a fixed intensity range (a HU window on CT, else
`percentile_range` of the training images), plus its mean and standard deviation;
`HistogramBaseline` fits a scikit-learn `LogisticRegression` on them, after a `StandardScaler`, in
one `Pipeline`.

Labels may be:

- one class index (or name) per image, binary or multi-class: one logistic regression
  (multinomial for more than two classes); `predict_proba` gives `(N, C)` probabilities, columns
  in the order of `classes_` (sorted labels);
- a `(N, C)` 0/1 indicator matrix (multi-label): one binary logistic regression per column
  (one-vs-rest); `predict_proba` gives `(N, C)` independent probabilities.

Example:
    >>> baseline = HistogramBaseline().fit(train_images, train_labels)
    >>> score = baseline.predict_proba(val_images)[:, 1]      # P(class 1), binary labels
    >>> sklearn.metrics.roc_auc_score(val_labels, score)
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from kerasmed.data.intensity import sampled_values
from serving.errors import ConfigError, DataError

DEFAULT_HU_RANGE = (-1000.0, 400.0)


def histogram_features(images, bins: int = 32,
                       intensity_range: tuple[float, float] = DEFAULT_HU_RANGE) -> np.ndarray:
    """Per-image normalised intensity histogram, mean and standard deviation.

    Values outside `intensity_range` are clipped into its end bins (so air below -1000 HU and bone
    above 400 HU are counted, as the end of the window, not dropped). Mean and standard deviation
    are of the clipped values, in `intensity_range` units scaled to [0, 1].

    Args:
        images: `(N, ...)` array: N images of any shape (2D, 2.5D stacks, volumes, channels),
            each flattened.
        bins: number of equal-width bins over `intensity_range`.
        intensity_range: `(low, high)`, e.g. (-1000, 400) HU, (24, 1424) for PNGs holding
            HU + 1024, or the training images' `percentile_range` (z-scored, microscopy).

    Returns:
        float64 `(N, bins + 2)`: each row's histogram (summing to 1), then its mean and std.

    Raises:
        ConfigError: if `bins` < 1 or `intensity_range` is not increasing.
        DataError: if `images` holds no image, an empty image, or non-finite values.
    """
    if int(bins) != bins or bins < 1:
        raise ConfigError(f"`bins` must be a positive integer. Received: bins={bins!r}")
    low, high = (float(v) for v in intensity_range)
    if not low < high:
        raise ConfigError("`intensity_range` must be (low, high) with low < high. "
                          f"Received: intensity_range={intensity_range}")
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[0] == 0 or x[0].size == 0:
        raise DataError(
            f"`images` must be an (N, ...) array of N >= 1 non-empty images. Received: shape={x.shape}"
        )
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(
            f"`images` must hold finite values. Received: {int((~np.isfinite(x)).sum())} NaN or inf"
        )
    unit = (np.clip(x, low, high) - low) / (high - low)  # [0, 1]
    index = np.minimum((unit * bins).astype(np.int64), bins - 1)
    rows = np.repeat(np.arange(len(x)), x.shape[1])
    hist = np.bincount(rows * bins + index.ravel(), minlength=len(x) * bins).reshape(len(x), bins)
    hist = hist / x.shape[1]
    return np.column_stack([hist, unit.mean(axis=1), unit.std(axis=1)])


def percentile_range(images, low: float = 0.5, high: float = 99.5, samples: int = 1_000_000,
                     ) -> tuple[float, float]:
    """A histogram range from the images' own intensities: their `low` and `high` percentiles.

    For data in no fixed unit (z-scored, microscopy, 8- or 16-bit photographs), where a HU range
    would clip every value into one end bin.

    Args:
        images: `(N, ...)` images (any shape; all values pooled).
        low, high: percentiles, 0 <= low < high <= 100.
        samples: values drawn (seeded) from a larger array for the percentiles.

    Returns:
        `(low_value, high_value)`, float, with low_value < high_value.

    Raises:
        DataError: if `images` is empty, or holds non-finite values or a single intensity.

    When the two percentiles coincide (most values equal), the range is the minimum and maximum.
    """
    flat = sampled_values(images, "A histogram range needs intensities. Received: no image value",
                          samples)
    if not np.isfinite(flat).all():
        raise DataError(f"`images` must hold finite values. Received: "
                        f"{int((~np.isfinite(flat)).sum())} NaN or inf")
    lo, hi = (float(v) for v in np.percentile(flat, [low, high]))
    if not lo < hi:  # mostly one value (e.g. a dark background): the whole range then
        lo, hi = float(flat.min()), float(flat.max())
    if not lo < hi:
        raise DataError(f"A histogram range needs intensities that vary. Received: every sampled "
                        f"value is {lo:g}")
    return lo, hi


class HistogramBaseline:
    """Logistic regression on `histogram_features`, standardised (a scikit-learn `Pipeline`).

    Args:
        bins: histogram bins.
        intensity_range: the histogram's intensity range.
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: solver iterations.

    Attributes:
        pipeline: the fitted `Pipeline` (`StandardScaler`, then `LogisticRegression`, or a
            `OneVsRestClassifier` of them for multi-label targets); None before `fit`.
        classes_: the sorted labels (single-label), or column indices (multi-label).
        multilabel: whether `fit` was given an indicator matrix.
    """

    def __init__(self, bins: int = 32, intensity_range: tuple[float, float] = DEFAULT_HU_RANGE,
                 C: float = 1.0, max_iter: int = 2000):
        self.bins = bins
        self.intensity_range = tuple(intensity_range)
        self.C = C
        self.max_iter = max_iter
        self.pipeline: Pipeline | None = None
        self.classes_: np.ndarray | None = None
        self.multilabel = False

    def features(self, images) -> np.ndarray:
        """`histogram_features` with this baseline's bins and range."""
        return histogram_features(images, self.bins, self.intensity_range)

    def fit(self, images, labels) -> HistogramBaseline:
        """Fit on images and their labels.

        Args:
            images: `(N, ...)` images.
            labels: `(N,)` class labels (at least two distinct), or `(N, C)` 0/1 indicators
                (each column holding both values).

        Returns:
            self.

        Raises:
            DataError: if the labels do not match the images in number, hold a single class, or
                an indicator column is constant or not 0/1.
        """
        x = self.features(images)
        y = np.asarray(labels)
        if y.shape[0] != x.shape[0] or y.ndim not in (1, 2):
            raise DataError(
                f"`labels` must be (N,) classes or (N, C) indicators for N = {x.shape[0]} images. "
                f"Received: labels shape={y.shape}"
            )
        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.multilabel = y.ndim == 2
        if self.multilabel:
            if not np.isin(y, (0, 1)).all():
                raise DataError("Multi-label `labels` must be 0/1 indicators. Received: values "
                                f"{sorted(np.unique(y).tolist())[:10]}")
            constant = [c for c in range(y.shape[1]) if len(np.unique(y[:, c])) < 2]
            if constant:
                raise DataError(
                    "Every multi-label column must hold both 0 and 1 to fit a classifier. "
                    f"Received: constant column(s) {constant}"
                )
            model = OneVsRestClassifier(model)
            self.classes_ = np.arange(y.shape[1])
        else:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise DataError(
                    f"`labels` must hold at least two classes. Received: only {self.classes_.tolist()}"
                )
        self.pipeline = Pipeline([("scale", StandardScaler()), ("logistic", model)])
        self.pipeline.fit(x, y.astype(int) if self.multilabel else y)
        return self

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities `(N, C)`: columns follow `classes_`; rows sum to 1 unless the
        baseline was fit on multi-label indicators.

        Raises:
            DataError: if called before `fit`.
        """
        if self.pipeline is None:
            raise DataError("`HistogramBaseline.predict_proba` needs a fitted baseline. "
                            "Received: call `fit` first")
        return self.pipeline.predict_proba(self.features(images))
