"""A config's intensity settings against its data: the unit augmentation shifts in, and whether a
HU window fits the intensities it is given.

**The intensity unit** is one unit of what the model computes on, in the raw units it takes (the
model's graph takes raw intensities, and augmentation jitters them before its first layer):

- `preprocessing.zscore: true`: the cache holds standard deviations already: 1;
- else by `model.intensity`: `hu_window`, the window's width (`HUWindow` maps it onto [0, 1]);
  `ct_fingerprint`, the fingerprint's foreground std (`CTNormalization` divides by it); `none`,
  the fingerprint's whole-image std (the training images' own spread).

`augmentation.intensity_shift` is a fraction of it, so the default (20/1400) is +-20 HU on the
default CT window, exactly as before, and +-0.014 standard deviations on z-scored microscopy
(where an absolute +-20 was +-20 standard deviations).

**Window fit**: a HU window suits data whose intensities it spreads over its range. It does not
when almost all voxels are clipped to one of its ends (16-bit microscopy under a CT window: all
above 400), or when the data's 1-99 percentile range fills a small part of it (z-scored values,
about -3..3, under a 1400 HU window: a near-constant image). `window_misfit` says which, for
`kerasmed check-data`'s warnings and the histogram baseline's choice of range.

TensorFlow-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasmed.data.fingerprint import ct_normalization, dataset_fingerprint
from serving.errors import ConfigError, DataError

# At or beyond one end of the window: "almost all" voxels. Real CT has up to about half its voxels
# below -1000 HU (air, padding outside the scan circle); 16-bit microscopy under a CT window, all.
CLIPPED_FRACTION = 0.9
# The share of the window the data's 1-99 percentiles must cover (lung CT patches: about 0.8;
# z-scored data under the default window: 0.004; 8-bit PNGs: 0.18).
MIN_WINDOW_COVERAGE = 0.25
# The nominal range of z-scored intensities, in standard deviations.
ZSCORE_RANGE = (-3.0, 3.0)
_SAMPLES = 1_000_000  # values drawn from a large array for its statistics


def needs_fingerprint(config) -> bool:
    """Whether `input_shift` needs the training set's statistics (`ct_fingerprint` or `none`
    without z-scoring, and a relative shift that is not 0)."""
    a = config.augmentation
    return (a.intensity_shift_hu is None and bool(a.intensity_shift)
            and not config.preprocessing.zscore and config.model.intensity != "hu_window")


def intensity_unit(config, fingerprint: dict | None = None) -> float:
    """One unit of the model's normalised intensities, in raw input units (see the module doc).

    Args:
        config: the experiment config (`preprocessing.zscore`, `model.intensity`,
            `model.hu_window`).
        fingerprint: the training set's `dataset_fingerprint`; needed by `ct_fingerprint` and
            `none` without z-scoring.

    Returns:
        The unit, > 0.

    Raises:
        ConfigError: if the unit needs a fingerprint and none is given.
        DataError: if the fingerprint has no usable std (see `fingerprint.ct_normalization`), or
            the training images do not vary.
    """
    m = config.model
    if config.preprocessing.zscore:
        return 1.0
    if m.intensity == "hu_window":
        return float(m.hu_window[1] - m.hu_window[0])
    if fingerprint is None:
        raise ConfigError(
            f"The intensity unit of `model.intensity: {m.intensity}` (without "
            "`preprocessing.zscore`) is a standard deviation of the training set: it needs its "
            "dataset fingerprint (`kerasmed.data.fingerprint.dataset_fingerprint`). "
            "Received: fingerprint=None"
        )
    if m.intensity == "ct_fingerprint":
        return ct_normalization(fingerprint)["std"]
    std = fingerprint.get("image_std")
    if not isinstance(std, (int, float)) or not std > 0:
        raise DataError(
            "`augmentation.intensity_shift` is a fraction of the training images' intensity std "
            "(`model.intensity: none`), which must be positive: set "
            "`augmentation.intensity_shift_hu` (raw units) or `intensity_shift: 0` instead. "
            f"Received: image_std={std!r} over {fingerprint.get('num_cases')} training cases"
        )
    return float(std)


def input_shift(config, cases: Sequence | None = None, fingerprint: dict | None = None) -> float:
    """The largest intensity shift augmentation applies, in raw input units.

    `augmentation.intensity_shift_hu` as given, else `augmentation.intensity_shift` times the
    intensity unit. On the default config: 20/1400 x 1400 = 20.0 HU exactly.

    Args:
        config: the experiment config.
        cases: the cached training cases; their fingerprint (seeded by `config.seed`, so the
            same numbers as the run's `fingerprint.json`) is computed only if `fingerprint` is
            None and the unit needs one.
        fingerprint: the training set's `dataset_fingerprint`, if already computed.

    Raises:
        ConfigError, DataError: see `intensity_unit`.
    """
    a = config.augmentation
    if a.intensity_shift_hu is not None:
        return float(a.intensity_shift_hu)
    if not a.intensity_shift:
        return 0.0
    if fingerprint is None and cases is not None and needs_fingerprint(config):
        fingerprint = dataset_fingerprint(cases, seed=config.seed)
    return a.intensity_shift * intensity_unit(config, fingerprint)


def sampled_values(values, empty_error: str, samples: int = _SAMPLES) -> np.ndarray:
    """All of `values`, flattened, as float64; a seeded sample of `samples` of them (with
    replacement) when there are more, which is plenty for percentiles and fractions.

    Raises:
        DataError: `empty_error`, if `values` is empty.
    """
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        raise DataError(empty_error)
    if flat.size > samples:
        flat = flat[np.random.default_rng(0).integers(0, flat.size, samples)]
    return flat.astype(np.float64)


def window_statistics(values, window) -> tuple[float, float, float, float]:
    """`(below, above, p1, p99)` of intensities against a window: the fractions at or below its
    low end and at or above its high end, and the 1st and 99th percentiles.

    Args:
        values: intensities of any shape (a seeded sample of 10**6 is used beyond that size).
        window: `(low, high)`.

    Raises:
        DataError: if `values` is empty.
    """
    flat = sampled_values(values, "Window statistics need intensities. Received: an empty array")
    low, high = (float(v) for v in window)
    p1, p99 = np.percentile(flat, [1.0, 99.0])
    return float((flat <= low).mean()), float((flat >= high).mean()), float(p1), float(p99)


def window_coverage(window, p1: float, p99: float) -> float:
    """The share of the window `(low, high)` that the range `[p1, p99]` overlaps, in [0, 1]."""
    low, high = (float(v) for v in window)
    return max(0.0, min(high, p99) - max(low, p1)) / (high - low)


def window_misfit(window, below: float, above: float, p1: float, p99: float) -> str | None:
    """Why a HU window does not fit intensities with these `window_statistics`, else None.

    Args:
        window: `(low, high)`, e.g. `model.hu_window`.
        below, above: fractions of the voxels at or below `low`, at or above `high`.
        p1, p99: the intensities' 1st and 99th percentiles.

    Returns:
        A sentence naming the numbers (almost all voxels clipped to one end, or the data filling
        a small part of the window), or None when the window suits the data.
    """
    low, high = (float(v) for v in window)
    where = f"model.hu_window [{low:g}, {high:g}]"
    for fraction, end in ((above, f"its high end {high:g}"), (below, f"its low end {low:g}")):
        if fraction >= CLIPPED_FRACTION:
            return (f"{100 * fraction:.3g}% of the voxels are clipped to {end} by {where} "
                    f"(intensities p1 / p99: {p1:.4g} / {p99:.4g}): the model sees a "
                    f"near-constant image")
    coverage = window_coverage(window, p1, p99)
    if coverage < MIN_WINDOW_COVERAGE:
        return (f"the intensities' p1 / p99 ({p1:.4g} / {p99:.4g}) cover {100 * coverage:.3g}% "
                f"of {where}: the model sees them squashed into a small part of [0, 1]")
    return None


def hu_window_fits(config, images) -> bool:
    """Whether the model's first layer is a HU window that fits `images` (as the cache holds them:
    z-scored with `preprocessing.zscore`): the intensities are HU, or HU shifted, as the window
    expects."""
    if config.model.intensity != "hu_window" or config.preprocessing.zscore:
        return False
    window = config.model.hu_window
    return window_misfit(window, *window_statistics(images, window)) is None


def config_warnings(config) -> list[str]:
    """Intensity settings that do not fit each other, whatever the data (one sentence each)."""
    m = config.model
    if not (config.preprocessing.zscore and m.intensity == "hu_window"):
        return []
    coverage = window_coverage(m.hu_window, *ZSCORE_RANGE)
    if coverage >= MIN_WINDOW_COVERAGE:
        return []
    low, high = m.hu_window
    return [f"`preprocessing.zscore: true` with `model.intensity: hu_window`: the z-scored "
            f"intensities (about {ZSCORE_RANGE[0]:g} to {ZSCORE_RANGE[1]:g} standard deviations) "
            f"fall inside model.hu_window [{low:g}, {high:g}] and fill {100 * coverage:.2g}% of "
            f"it, so the model sees a near-constant image; use `model.intensity: none` with "
            f"z-scored data (or a window in standard deviations)"]
