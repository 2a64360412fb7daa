"""Segmentation, training side: a 2D (2.5D) slice U-Net trained on balanced patches.

Targets are the cached masks; the sampler draws `sampling.positive_fraction` of its patches
around foreground (`kerasmed.data.pipeline`); the loss is Dice + cross-entropy and checkpoints
watch whole-slice validation Dice. Evaluation reads each case from its original files, runs the
shared serving inference, maps the probabilities back onto the source grid and scores them
against the source mask, beside an HU-threshold baseline on the cases whose manifest row names a
lung mask (`lung_mask_path`, optional: without any the baseline is reported as not available).

Evaluation files: `metrics.csv`, `summary.json`, `training_curves.png`, `dice_per_case.png`,
`overlay_montage.png`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.tasks.base_task import TrainingTask
from serving.atomic import atomic_dir
from serving.errors import ConfigError
from serving.inference import predict_image, probs_to_mask
from serving.io import read_image
from serving.metrics import dice


class SegmentationTraining(TrainingTask):
    """See the module docstring."""

    name = "segmentation"
    has_training_benchmark = True
    monitor = "val_dice"

    def check_config(self, config) -> None:
        # The U-Net halves each side `depth` times and doubles it back, then joins the skip
        # connections: any other side length fails inside TensorFlow at the first concat.
        multiple = 2**config.model.depth
        patch, size = list(config.sampling.patch_size), list(config.preprocessing.size)
        if any(p % multiple for p in patch):
            raise ConfigError(
                f"config key `sampling.patch_size` must hold multiples of 2**model.depth = {multiple}. "
                f"Received: sampling.patch_size={patch}, model.depth={config.model.depth}"
            )
        if any(s is not None and s % multiple for s in size[1:]):
            raise ConfigError(
                f"config key `preprocessing.size` must hold null or multiples of 2**model.depth = "
                f"{multiple} for y and x. Received: preprocessing.size={size}, "
                f"model.depth={config.model.depth}"
            )

    def generate(self, config, root, progress=True, overwrite=False, created_by="kerasmed generate"):
        from kerasmed.data.generate import generate_dataset

        s = config.synthetic
        return generate_dataset(root, num_cases=s.num_cases, seed=s.seed, shape=s.shape,
                                split_fractions=s.split_fractions, progress=progress,
                                overwrite=overwrite, created_by=created_by)

    def required_columns(self, config) -> dict[str, str]:
        return {"mask_path": "Training a segmentation model needs a mask per case "
                             "(`data.columns.mask`; an ImageFolder tree has none)"}

    def model_arguments(self, config) -> dict[str, Any]:
        m = config.model
        return {"input_shape": (None, None, m.context_slices), "num_classes": m.num_classes}

    def input_signature(self, config):
        import tensorflow as tf

        context = config.model.context_slices
        return tf.TensorSpec((None, None, None, context)), tf.TensorSpec((None, None, None, 1))

    def train_dataset(self, config, cases, manifest, batch_size=None, **shard):
        from kerasmed.data.augment import RandomAugment2D
        from kerasmed.data.intensity import input_shift
        from kerasmed.data.pipeline import make_train_dataset

        s, a = config.sampling, config.augmentation
        augment = RandomAugment2D(a.flip, a.rot90 and s.patch_size[0] == s.patch_size[1],
                                  input_shift(config, cases), a.intensity_scale)
        return make_train_dataset(
            cases, config.model.context_slices, s.patch_size, batch_size or s.batch_size,
            s.positive_fraction, augment, s.shuffle_buffer, config.seed, **shard,
        )

    def val_dataset(self, config, cases, manifest, batch_size):
        from kerasmed.data.pipeline import make_val_dataset

        return make_val_dataset(cases, config.model.context_slices, batch_size,
                                config.training.max_val_slices)

    def loss(self, config):
        from kerasmed.losses import DiceCELoss

        return DiceCELoss(dice_weight=config.training.dice_weight)

    def metrics(self, config) -> list:
        from kerasmed.losses import DiceScore

        return [DiceScore(threshold=config.evaluation.threshold)]

    def export_arguments(self, config, run_dir) -> dict[str, Any]:
        return {"class_names": list(config.model.class_names),
                "postprocess": {"threshold": config.evaluation.threshold, "min_component_voxels": 0}}

    def headline(self, summary) -> str:
        baseline = summary.get("baseline_mean_dice")
        return (f"model mean Dice ({summary['split']}, {summary['cases']} cases): "
                f"{summary['mean_dice']:.3f}   baseline mean Dice (HU threshold): "
                + ("n/a" if baseline is None else f"{baseline:.3f}"))

    def evaluate(self, run_dir: Path, config, cases: pd.DataFrame, split: str,
                 progress: bool = True) -> dict[str, Any]:
        from kerasmed.data.manifest import check_case_geometry, require_column
        from kerasmed.evaluation.metrics import require_finite_predictions, threshold_baseline
        from kerasmed.evaluation.plots import (
            plot_dice_per_case,
            plot_overlay_montage,
            plot_training_curves,
        )
        from kerasmed.keras_runner import KerasRunner

        ev = config.evaluation
        require_column(cases, "mask_path", "evaluating a segmentation model")
        if "lung_mask_path" not in cases:
            cases = cases.assign(lung_mask_path="")
        runner = KerasRunner(run_dir / "model.keras")
        spec = config.preprocessing.spec()
        rows, panels = [], []
        start = time.monotonic()
        for case in tqdm(cases.itertuples(), total=len(cases), desc=f"evaluate {split}",
                         disable=not progress):
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
            require_finite_predictions(probs, case.case_id, run_dir / "model.keras")
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
            "task": self.name,
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
