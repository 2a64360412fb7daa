"""What a training run reads, resolved without TensorFlow: the config's preprocessed cache.

Kept TensorFlow-free so that the multi-worker launcher and `kerasmed preprocess` can build the
cache once, before training starts, instead of every worker racing to build it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kerasmed.config import Config
from kerasmed.data.cache import CacheReport, load_cache, update_cache
from kerasmed.data.manifest import dataset_manifest
from serving.runners.threads import usable_cpu_count


def preprocess_dataset(config: Config, workers: int | None = None, prune: bool = False,
                       progress: bool = True, manifest: pd.DataFrame | None = None) -> CacheReport:
    """Build the config's preprocessed cache, reusing every finished case.

    Args:
        config: the experiment config (`data`, `preprocessing`).
        workers: processes preprocessing cases at once; None: the CPUs this process may use.
        prune: delete the spec folder's cases and indexes that this manifest does not use.
        progress: show a progress bar.
        manifest: the cases to cache (e.g. those a data check kept); default: the config's
            manifest (`read_manifest`).

    Returns:
        What was built, reused and pruned; `.index` is the folder `load_cache` takes.

    Raises:
        ConfigError: if `preprocessing.size` leaves a slice side to the data and a case's
            preprocessed slices do not fit the model (`Config.check_slice_shape`).
        DataError: if the dataset is missing or a case is unreadable.
    """
    root = Path(config.data.root)
    if manifest is None:
        manifest = dataset_manifest(config)  # the config's columns, format and split rule
    cache_root = Path(config.data.cache_dir) if config.data.cache_dir else root / "cache"
    report = update_cache(manifest, config.preprocessing.spec(), cache_root, progress=progress,
                          workers=usable_cpu_count() if workers is None else workers, prune=prune,
                          read=config.data.read)
    if None in config.preprocessing.size[1:]:
        # Only now are the slice sides known (the config checked every side it sets). The cache
        # holds every split, so this also covers the whole slices validation and evaluation run.
        for case in load_cache(report.index):
            config.check_slice_shape(case.image.shape, f"case {case.case_id} ({report.index})")
    return report


def cache_for(config: Config, progress: bool = True, workers: int | None = None,
              manifest: pd.DataFrame | None = None) -> Path:
    """Build (or reuse) the preprocessed cache of the config's dataset (or of `manifest`); returns
    its index folder (see `preprocess_dataset`; `workers` defaults to the CPUs this process may
    use)."""
    return preprocess_dataset(config, workers=workers, progress=progress, manifest=manifest).index
