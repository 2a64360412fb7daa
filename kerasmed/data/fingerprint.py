"""The dataset fingerprint: statistics of the training cases, computed once per run.

As in nnU-Net, the fingerprint records the source geometry (spacing and shape per axis) and the
intensities inside the labelled foreground, from which CT normalisation takes its clip window
(the 0.5 and 99.5 percentiles) and its z-score (mean and std). The training run writes it to
`<run>/fingerprint.json` and the bundle manifest carries it as `input.fingerprint`, so training,
export and serving use the same numbers; the numbers themselves live in the Keras graph
(`kerasmed.layers.CTNormalization`), so every artefact still takes raw intensities.

Intensities are those of the cache, i.e. after resampling, which is what the model sees. Each
case contributes a seeded random sample of up to `samples_per_case` voxels, so a large case does
not outweigh the others and the cost stays bounded; the pooled samples give the statistics.

TensorFlow-free: the cache and the launcher import this module.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from serving.errors import ConfigError, DataError

# Keys of the intensity statistics, with the prefix "foreground_" or "image_".
INTENSITY_STATS = ("mean", "std", "median", "percentile_00_5", "percentile_99_5", "min", "max")


def _sample(values: np.ndarray, where: np.ndarray | None, k: int, rng: np.random.Generator):
    """Up to `k` of the voxels of `values` (where `where` holds, or all), without replacement."""
    flat = values.reshape(-1)
    index = np.flatnonzero(where.reshape(-1)) if where is not None else None
    n = flat.size if index is None else index.size
    if n > k:
        picked = rng.choice(n, size=k, replace=False)
        index = np.sort(picked if index is None else index[picked])  # sorted: sequential memmap reads
    elif index is None:
        index = slice(None)
    return np.asarray(flat[index], dtype=np.float64), n


def _stats(samples: np.ndarray, voxels: int, prefix: str) -> dict:
    low, median, high = np.percentile(samples, [0.5, 50.0, 99.5])
    values = (samples.mean(), samples.std(), median, low, high, samples.min(), samples.max())
    return {f"{prefix}_voxels": int(voxels), f"{prefix}_samples": int(samples.size),
            **{f"{prefix}_{k}": float(v) for k, v in zip(INTENSITY_STATS, values, strict=True)}}


def _per_axis(values: list, name: str) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {f"{name}_median": np.median(array, axis=0).tolist(),
            f"{name}_min": array.min(axis=0).tolist(), f"{name}_max": array.max(axis=0).tolist()}


def dataset_fingerprint(cases: Sequence, seed: int = 0, samples_per_case: int = 10000) -> dict:
    """Statistics of the training cases, for CT normalisation and for the record.

    Args:
        cases: cached cases of the training split (`kerasmed.data.cache.CachedCase`): `image`
            `(Z, H, W)` float32, `mask` `(Z, H, W)` uint8 (foreground = mask > 0), and `meta`
            with `source_spacing` (mm) and `source_shape`, each `(z, y, x)`.
        seed: seed of the voxel samples; the same seed gives the same numbers.
        samples_per_case: most voxels sampled per case, from the foreground and from the whole
            image each.

    Returns:
        A flat JSON-ready mapping: `num_cases`, `seed`, `samples_per_case`; `spacing_median`,
        `spacing_min`, `spacing_max` (mm) and `shape_median`, `shape_min`, `shape_max`, each a
        `[z, y, x]` list (left out when the cache records no source geometry); and for the prefixes
        `foreground` and `image`: `<prefix>_voxels` (all of them), `<prefix>_samples` (pooled),
        and `<prefix>_` + each of `INTENSITY_STATS`.

    Raises:
        ConfigError: if `samples_per_case` is not a positive integer.

    A dataset without any foreground voxel (or without masks) gets `foreground_voxels` 0 and no
    other foreground statistic; `ct_normalization` then refuses it.
    """
    if isinstance(samples_per_case, bool) or not isinstance(samples_per_case, int) \
            or samples_per_case < 1:
        raise ConfigError(f"`samples_per_case` must be an integer >= 1. "
                          f"Received: samples_per_case={samples_per_case!r}")
    # Sorted, and each case seeded by its id: the numbers depend neither on the order of the
    # cases nor, for one case's sample, on which other cases are there.
    cases = sorted(cases, key=lambda c: c.case_id)
    foreground, image = [], []
    fg_voxels = image_voxels = 0
    for case in cases:
        rng = np.random.default_rng([seed, zlib.crc32(str(case.case_id).encode())])
        if case.mask is not None:  # a case without a mask (classification) has no foreground
            values, n = _sample(case.image, np.asarray(case.mask) > 0, samples_per_case, rng)
            foreground.append(values)
            fg_voxels += n
        values, n = _sample(case.image, None, samples_per_case, rng)
        image.append(values)
        image_voxels += n
    fingerprint = {"num_cases": len(cases), "seed": int(seed), "samples_per_case": samples_per_case}
    metas = [getattr(c, "meta", None) or {} for c in cases]
    # A cache written before it recorded the source geometry has no `meta`: no geometry then.
    if all("source_spacing" in m and "source_shape" in m for m in metas):
        fingerprint.update(_per_axis([m["source_spacing"] for m in metas], "spacing"))
        fingerprint.update(_per_axis([m["source_shape"] for m in metas], "shape"))
    if fg_voxels:
        fingerprint.update(_stats(np.concatenate(foreground), fg_voxels, "foreground"))
    else:
        fingerprint["foreground_voxels"] = 0
    fingerprint.update(_stats(np.concatenate(image), image_voxels, "image"))
    return fingerprint


def ct_normalization(fingerprint: dict) -> dict[str, float]:
    """The arguments of `kerasmed.layers.CTNormalization` from a dataset fingerprint.

    Args:
        fingerprint: from `dataset_fingerprint`.

    Returns:
        `{"low", "high", "mean", "std"}`: the foreground's 0.5 and 99.5 percentiles, mean and std.

    Raises:
        DataError: if the fingerprint lacks them, or the foreground intensities do not vary
            (std 0 cannot z-score).
    """
    keys = {"low": "foreground_percentile_00_5", "high": "foreground_percentile_99_5",
            "mean": "foreground_mean", "std": "foreground_std"}
    if fingerprint.get("foreground_voxels") == 0:
        raise DataError(
            "CT normalisation needs labelled foreground: the dataset fingerprint takes its "
            "intensity statistics where mask > 0, and no training case has a foreground voxel. "
            f"Received: 0 foreground voxels in {fingerprint.get('num_cases')} training cases"
        )
    try:
        stats = {name: float(fingerprint[key]) for name, key in keys.items()}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"CT normalisation needs the fingerprint's {sorted(keys.values())} as numbers. "
            f"Received: {err!r}"
        ) from err
    if not stats["std"] > 0:
        raise DataError(
            "CT normalisation needs foreground intensities that vary (`foreground_std` > 0) to "
            f"z-score them. Received: foreground_std={stats['std']}"
        )
    return stats
