"""Evaluation plots: training curves, Dice per case, overlay montage (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from serving.atomic import atomic_file  # noqa: E402


def _save(fig, path: Path) -> None:
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_training_curves(log_csv: Path, path: Path, metric: str = "dice") -> None:
    """Loss and the task's metric (`dice`, `auc`) per epoch, training and validation, from Keras'
    CSVLogger file."""
    log = pd.read_csv(log_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("loss", metric)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in log:
                ax.plot(log["epoch"] + 1, log[prefix + key], style, marker="o", ms=3,
                        label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_dice_per_case(metrics: pd.DataFrame, path: Path) -> None:
    """Bar chart of model and baseline Dice per case, with the means as lines."""
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(metrics) + 2), 3.6))
    x = np.arange(len(metrics))
    ax.bar(x - 0.2, metrics["dice"], 0.4, label=f"model (mean {metrics['dice'].mean():.3f})")
    if metrics["baseline_dice"].notna().any():  # not without lung masks (see `evaluate`)
        ax.bar(x + 0.2, metrics["baseline_dice"], 0.4,
               label=f"HU-threshold baseline (mean {metrics['baseline_dice'].mean():.3f})")
    ax.set_xticks(x, metrics["case_id"], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    # Above the axes, so it never hides a bar.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_overlay_montage(panels: list[dict], path: Path, window=(-1000.0, 400.0)) -> None:
    """One row per case: CT slice, truth contour (green) and prediction contour (red).

    Args:
        panels: dicts with `case_id`, `image` `(H, W)` HU, `truth` and `pred` `(H, W)` masks,
            `slice` index and `dice`.
        path: PNG to write.
        window: display window in HU.
    """
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 2, figsize=(7, 3.4 * n), squeeze=False)
    for row, p in zip(axes, panels):
        for ax in row:
            ax.imshow(p["image"], cmap="gray", vmin=window[0], vmax=window[1])
            ax.axis("off")
        row[0].set_title(f"{p['case_id']} slice {p['slice']}")
        row[1].contour(p["truth"], levels=[0.5], colors="lime", linewidths=1.2)
        if p["pred"].any():
            row[1].contour(p["pred"], levels=[0.5], colors="red", linewidths=1.0)
        row[1].set_title(f"truth (green) / model (red), case Dice {p['dice']:.3f}")
    _save(fig, path)
