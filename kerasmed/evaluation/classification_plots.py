"""Classification evaluation plots: ROC and precision-recall curves, confusion matrix, reliability
diagram (matplotlib, Agg).

The plots draw what `serving.metrics` computed and compute nothing themselves, so a figure and
the report beside it always show the same numbers. Each PNG is written under a temporary name and
renamed into place (`kerasmed.evaluation.plots._save`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kerasmed.evaluation.plots import _save  # noqa: E402
from serving.errors import DataError  # noqa: E402


def _as_list(curves) -> list[Mapping]:
    items = [curves] if isinstance(curves, Mapping) else list(curves)
    if not items:
        raise DataError("`curves` must hold at least one curve. Received: an empty sequence")
    return items


def _legend_label(curve: Mapping, name: str, value_key: str, default_label: str,
                  with_threshold: bool) -> str:
    text = str(curve.get("label", default_label))
    if curve.get(value_key) is not None:
        text += f": {name} {curve[value_key]:.3f}"
        if curve.get("ci") is not None:
            low, high = curve["ci"]
            level = 100 * curve.get("ci_level", 0.95)
            text += f" ({level:.0f}% CI {low:.3f}-{high:.3f})"
    if with_threshold and curve.get("operating_point") is not None and curve.get("threshold") is not None:
        text += f", t={curve['threshold']:.3g}"
    return text


def _operating_point(ax, curve: Mapping, color, annotate: bool) -> bool:
    point = curve.get("operating_point")
    if point is None:
        return False
    ax.plot(point[0], point[1], "o", ms=8, color=color, mec="black", mew=1.2, zorder=5)
    if annotate and curve.get("threshold") is not None:
        ax.annotate(f"t={curve['threshold']:.3g}", point, textcoords="offset points", xytext=(6, -12),
                    fontsize=8)
    return True


def _finish(ax, xlabel: str, ylabel: str, marked: bool, title: str | None, loc: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if marked:
        handles.append(Line2D([], [], ls="", marker="o", ms=8, color="white", mec="black", mew=1.2))
        labels.append("operating point")
    # Inside the corner a curve of any use never reaches (ROC lower right, PR lower left).
    ax.legend(handles, labels, loc=loc, fontsize=7, framealpha=0.85)
    if title:
        ax.set_title(title)


def plot_roc(curves: Mapping | Sequence[Mapping], path: Path | str, title: str | None = None) -> None:
    """ROC curves of one or several classes, with AUC and its CI in the legend.

    Args:
        curves: one dict or a list of dicts, each with `fpr` and `tpr` (arrays, e.g. from
            `serving.metrics.roc_curve`) and optionally `label` (e.g. the class name), `auc`,
            `ci` `(low, high)`, `ci_level` (0.95 by default), `operating_point` `(fpr, tpr)`
            marked with a dot, and `threshold` written beside it (in the legend when there are
            several curves).
        path: PNG to write.
        title: an optional title.

    Raises:
        DataError: if `curves` is empty.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    marked, items = False, _as_list(curves)
    for i, curve in enumerate(items):
        (line,) = ax.plot(curve["fpr"], curve["tpr"], lw=1.6,
                          label=_legend_label(curve, "AUC", "auc", f"class {i}", len(items) > 1))
        marked |= _operating_point(ax, curve, line.get_color(), len(items) == 1)
    _finish(ax, "1 - specificity (false positive rate)", "sensitivity (true positive rate)", marked,
            title, "lower right")
    _save(fig, Path(path))


def plot_pr(curves: Mapping | Sequence[Mapping], path: Path | str, title: str | None = None) -> None:
    """Precision-recall curves of one or several classes, with average precision and its CI in
    the legend.

    Args:
        curves: one dict or a list of dicts, each with `precision` and `recall` in order of
            decreasing threshold (as `serving.metrics.pr_curve` returns them) and optionally
            `label`, `ap`, `ci` `(low, high)`, `ci_level`, `prevalence` (drawn as the chance
            line), `operating_point` `(recall, precision)` and `threshold`. Each curve is drawn as
            the step function that average precision integrates, from recall 0.
        path: PNG to write.
        title: an optional title.

    Raises:
        DataError: if `curves` is empty.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    marked, items = False, _as_list(curves)
    for i, curve in enumerate(items):
        precision = np.asarray(curve["precision"], dtype=float)
        recall = np.asarray(curve["recall"], dtype=float)
        # Precision P_k holds over the recall step (R_(k-1), R_k], starting from recall 0.
        (line,) = ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="pre", lw=1.6,
                          label=_legend_label(curve, "AP", "ap", f"class {i}", len(items) > 1))
        if curve.get("prevalence") is not None:
            ax.axhline(curve["prevalence"], ls=":", lw=1, color=line.get_color())
        marked |= _operating_point(ax, curve, line.get_color(), len(items) == 1)
    _finish(ax, "recall (sensitivity)", "precision (PPV)", marked, title, "lower left")
    _save(fig, Path(path))


def plot_confusion(matrix, class_names: Sequence[str], path: Path | str,
                   title: str | None = None) -> None:
    """Confusion matrix: rows are the true class, columns the predicted one; each cell shows the
    count and its share of the row (the per-class recall on the diagonal), and is shaded by that
    share so that a rare class reads as clearly as a common one.

    Args:
        matrix: `(C, C)` counts, `matrix[true, predicted]`.
        class_names: C names.
        path: PNG to write.
        title: an optional title.

    Raises:
        DataError: if `matrix` is not square, holds negative or non-finite counts, or the names do
            not match its size.
    """
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise DataError(f"`matrix` must be (C, C) for C = len(class_names) = {len(class_names)}. "
                        f"Received: shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or counts.min(initial=0) < 0:
        raise DataError("`matrix` must hold non-negative finite counts. "
                        f"Received: values from {counts.min():g} to {counts.max():g}")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (r, c), n in np.ndenumerate(counts):
        ax.text(c, r, f"{n:.0f}\n{100 * share[r, c]:.0f}%", ha="center", va="center", fontsize=8,
                color="white" if share[r, c] > 0.6 else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if title:
        ax.set_title(title)
    _save(fig, Path(path))


def _reliability(ax_curve, ax_hist, bins: Mapping, offset: float, label: str, style: str) -> None:
    edges = np.asarray(bins["edges"], dtype=float)
    count = np.asarray(bins["count"])
    filled = count > 0
    confidence = np.asarray(bins["confidence"], dtype=float)[filled]
    frequency = np.asarray(bins["frequency"], dtype=float)[filled]
    (line,) = ax_curve.plot(confidence, frequency, style, marker="o", ms=4, label=label)
    width = np.diff(edges)
    ax_hist.bar(edges[:-1] + width * (0.05 + offset), count, width * 0.45, align="edge",
                color=line.get_color(), label=label)


def plot_calibration(bins_before: Mapping, bins_after: Mapping | None, ece_before: float,
                     ece_after: float | None, path: Path | str, title: str | None = None) -> None:
    """Reliability diagram before and, optionally, after temperature scaling, with the number of
    cases per bin below.

    Args:
        bins_before: `serving.metrics.reliability_bins` of the uncalibrated predictions.
        bins_after: the same after `apply_temperature`, or None to draw one diagram.
        ece_before, ece_after: their expected calibration errors (`ece_after` is ignored
            without `bins_after`).
        path: PNG to write.
        title: an optional title.
    """
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5.2, 6.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    _reliability(ax, ax_hist, bins_before, 0.0, f"before (ECE {ece_before:.3f})", "-")
    if bins_after is not None:
        after = "after" if ece_after is None else f"after (ECE {ece_after:.3f})"
        _reliability(ax, ax_hist, bins_after, 0.5, after, "--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.set_xlabel("predicted probability")
    ax_hist.set_ylabel("cases")
    ax_hist.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    _save(fig, Path(path))
