"""What a training run reads, resolved without TensorFlow: the config's preprocessed cache.

Kept TensorFlow-free so that the multi-worker launcher can build the cache once, before it starts
the workers, instead of every worker racing to build it.
"""

from __future__ import annotations

from pathlib import Path

from kerasmed.config import Config
from kerasmed.data.cache import build_cache
from kerasmed.data.manifest import read_manifest


def cache_for(config: Config, progress: bool = True) -> Path:
    """Build (or reuse) the preprocessed cache of the config's dataset; returns its folder."""
    root = Path(config.data.root)
    manifest = read_manifest(root, config.data.manifest)
    cache_root = Path(config.data.cache_dir) if config.data.cache_dir else root / "cache"
    return build_cache(manifest, config.preprocessing.spec(), cache_root, progress=progress)
