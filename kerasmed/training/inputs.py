"""What a training run reads, resolved without TensorFlow: the config's preprocessed cache.

Kept TensorFlow-free so that the multi-worker launcher can build the cache once, before it starts
the workers, instead of every worker racing to build it.
"""

from __future__ import annotations

from pathlib import Path

from kerasmed.config import Config
from kerasmed.data.cache import build_cache, load_cache
from kerasmed.data.manifest import read_manifest


def cache_for(config: Config, progress: bool = True) -> Path:
    """Build (or reuse) the preprocessed cache of the config's dataset; returns its folder.

    Raises:
        ConfigError: if `preprocessing.size` leaves a slice side to the data and a case's
            preprocessed slices do not fit the model (`Config.check_slice_shape`).
        DataError: if the dataset is missing or a case is unreadable.
    """
    root = Path(config.data.root)
    manifest = read_manifest(root, config.data.manifest)
    cache_root = Path(config.data.cache_dir) if config.data.cache_dir else root / "cache"
    folder = build_cache(manifest, config.preprocessing.spec(), cache_root, progress=progress)
    if None in config.preprocessing.size[1:]:
        # Only now are the slice sides known (the config checked every side it sets). The cache
        # holds every split, so this also covers the whole slices validation and evaluation run.
        for case in load_cache(folder):
            config.check_slice_shape(case.image.shape, f"case {case.case_id} ({folder})")
    return folder
