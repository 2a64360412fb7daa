"""Evaluate a trained run on whole validation cases, in the source geometry.

Each case is read from its original files, run slice by slice through the shared serving
preprocessing and inference, mapped back to the source grid, and scored against the source mask.
The HU-threshold baseline is scored on the same cases beside the model, on the cases whose
manifest row names a lung mask (`lung_mask_path`, optional): without any, the baseline is reported
as not available (`baseline_mean_dice` null, `baseline_dice` empty).

Outputs in `<run_dir>/eval/`: `metrics.csv`, `summary.json`, `training_curves.png`,
`dice_per_case.png`, `overlay_montage.png`. The folder is written as a set: built under a temporary
name and swapped in at the end, so an interrupted evaluation leaves the previous `eval/` (or none),
never a mix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.data.manifest import check_case_geometry, dataset_manifest, require_column, split_cases
from kerasmed.evaluation.metrics import threshold_baseline
from kerasmed.evaluation.plots import plot_dice_per_case, plot_overlay_montage, plot_training_curves
from kerasmed.keras_runner import KerasRunner
from kerasmed.run import load_run
from serving.atomic import atomic_dir
from serving.inference import predict_image, probs_to_mask
from serving.io import read_image
from serving.metrics import dice


def evaluate(run_dir: str | Path, split: str | None = None, progress: bool = True) -> dict:
    """Score the run's model and the threshold baseline per case and write the eval folder.

    Args:
        run_dir: a finished training run.
        split: manifest split to score; default `evaluation.split` of the run's config.
        progress: show a progress bar.

    Returns:
        The summary written to `summary.json` (mean/median Dice of model and baseline, cases).
    """
    run_dir, config = load_run(run_dir)
    ev = config.evaluation
    split = split or ev.split
    cases = split_cases(dataset_manifest(config), split)
    require_column(cases, "mask_path", "evaluating a segmentation model")
    if "lung_mask_path" not in cases:
        cases = cases.assign(lung_mask_path="")
    runner = KerasRunner(run_dir / "model.keras")
    spec = config.preprocessing.spec()
    rows, panels = [], []
    start = time.monotonic()
    for case in tqdm(cases.itertuples(), total=len(cases), desc=f"evaluate {split}", disable=not progress):
        image = read_image(case.image_path, options=config.data.read)
        truth = read_image(case.mask_path, options=config.data.read)
        # The checks training's cache applies: a mask off the image grid is a data error here too.
        check_case_geometry(image, truth, case.case_id, case.mask_path)
        truth = truth.array > 0
        baseline_dice = np.nan
        if case.lung_mask_path:
            lungs = read_image(case.lung_mask_path, options=config.data.read)
            check_case_geometry(image, lungs, case.case_id, case.lung_mask_path, what="Lung mask")
            guess = threshold_baseline(image.array, lungs.array > 0, ev.baseline_threshold_hu)
            baseline_dice = dice(guess, truth)
        probs, _, _ = predict_image(runner, image, spec, ev.batch_size)
        pred = probs_to_mask(probs, ev.threshold) > 0
        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        rows.append({
            "case_id": case.case_id,
            "dice": dice(pred, truth),
            "baseline_dice": baseline_dice,
            "truth_ml": truth.sum() * voxel_ml,
            "pred_ml": pred.sum() * voxel_ml,
            "sensitivity": float((pred & truth).sum() / max(truth.sum(), 1)),
            "precision": float((pred & truth).sum() / max(pred.sum(), 1)),
        })
        z = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(1)))
        panels.append({"case_id": case.case_id, "slice": z, "image": image.array[z],
                       "truth": truth[z], "pred": pred[z], "dice": rows[-1]["dice"]})
    metrics = pd.DataFrame(rows)
    with_baseline = int(metrics["baseline_dice"].notna().sum())
    baseline = f"HU > {ev.baseline_threshold_hu:g} inside the lung mask"
    if with_baseline < len(metrics):
        baseline = (f"{baseline} ({with_baseline} of {len(metrics)} cases name a `lung_mask_path`)"
                    if with_baseline else "not available: no case names a `lung_mask_path`")
    summary = {
        "split": split,
        "cases": len(metrics),
        "mean_dice": float(metrics["dice"].mean()),
        "median_dice": float(metrics["dice"].median()),
        # Over the cases with a lung mask; null when none has one.
        "baseline_mean_dice": float(metrics["baseline_dice"].mean()) if with_baseline else None,
        "baseline": baseline,
        "threshold": ev.threshold,
        "seconds": round(time.monotonic() - start, 1),
    }
    with atomic_dir(run_dir / "eval") as out_dir:
        metrics.to_csv(out_dir / "metrics.csv", index=False, float_format="%.5f")
        plot_dice_per_case(metrics, out_dir / "dice_per_case.png")
        plot_overlay_montage(panels[:6], out_dir / "overlay_montage.png", config.model.hu_window)
        if (run_dir / "training_log.csv").is_file():
            plot_training_curves(run_dir / "training_log.csv", out_dir / "training_curves.png")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
