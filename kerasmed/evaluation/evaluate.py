"""Evaluate a trained run on whole cases of a split, with the metrics, baseline and plots of its
task (`kerasmed.tasks`; segmentation: Dice on the source grid, classification: ROC/PR, operating
point, calibration).

Outputs in `<run_dir>/eval/`, always with `summary.json`. The folder is written as a set: built
under a temporary name and swapped in at the end, so an interrupted evaluation leaves the previous
`eval/` (or none), never a mix.
"""

from __future__ import annotations

from pathlib import Path

from kerasmed.data.manifest import dataset_manifest, split_cases
from kerasmed.run import load_run
from kerasmed.tasks import training_task


def evaluate(run_dir: str | Path, split: str | None = None, progress: bool = True) -> dict:
    """Score the run's model (and its task's baseline) on a split and write the eval folder.

    Args:
        run_dir: a finished training run.
        split: manifest split to score; default `evaluation.split` of the run's config.
        progress: show a progress bar.

    Returns:
        The summary written to `summary.json` (the task's figures; e.g. mean/median Dice of
        model and baseline for segmentation, AUC and its CI for classification).
    """
    run_dir, config = load_run(run_dir)
    split = split or config.evaluation.split
    cases = split_cases(dataset_manifest(config), split)
    return training_task(config.task).evaluate(run_dir, config, cases, split, progress)
