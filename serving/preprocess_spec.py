"""The preprocessing spec: what a config or a bundle manifest says preprocessing must do.

`serving.preprocessing` applies it (see its docstring for the steps); this module holds the spec,
its validation, its dict form (`input.preprocessing` in a bundle manifest) and the version rule:
`PREPROCESSING_VERSION` is written by `to_dict`, and `from_dict` refuses a version this code does
not implement. A dict without "version" is version 1 (resample, then centre crop/pad only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from serving.errors import ConfigError

PREPROCESSING_VERSION = 2
PREPROCESSING_VERSIONS = (1, 2)
_IMAGE_ORDERS = ("linear", "cubic")
# The keys version 2 added; a version-1 dict holding one was not written by version-1 code.
_V2_KEYS = ("clip", "crop_foreground", "foreground_margin", "multiple_of", "zscore", "order")


def _is_finite_number(value) -> bool:
    """Whether `value` is a real number other than NaN and +-inf (bools are not numbers here)."""
    if isinstance(value, bool):
        return False
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _short(value: Any, limit: int = 120) -> str:
    """`repr(value)` cut to `limit` characters, so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _per_axis(value, n: int, name: str, minimum: int) -> tuple[int | None, ...] | None:
    """`None`, one int (the in-plane axes: all but the slice axis of a 3-axis spec) or one
    int-or-None per axis, as a tuple of `n` entries."""
    if value is None:
        return None
    axes = (None,) * (n - 2) + (value,) * min(n, 2) if _is_int(value) else value
    ok = isinstance(axes, (list, tuple)) and len(axes) == n
    if not (ok and all(v is None or (_is_int(v) and v >= minimum) for v in axes)):
        raise ConfigError(
            f"`{name}` must be an integer >= {minimum} or one integer >= {minimum} or null per "
            f"array axis ({n}). Received: {name}={_short(value)}"
        )
    return tuple(None if v is None else int(v) for v in axes)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image into model input (see the module docstring for the steps).

    Args:
        target_spacing: mm per array axis; `None` keeps the source spacing of that axis.
        size: output length per array axis after centre crop/pad; `None` keeps the resampled
            length.
        pad_value: value used where padding is needed, in source units (-1024 HU is air).
        clip: `(low, high)` to clip intensities to first, or `None`.
        crop_foreground: threshold of the foreground box (e.g. -500 HU for the body), or `None`.
        foreground_margin: voxels added around the box per axis, `None` for an axis kept whole;
            one int means the in-plane axes. Default with `crop_foreground`: `(None, 0, 0)` for
            3 axes, `(0, 0)` for 2.
        multiple_of: pad each axis up to a multiple of this, `None` for an axis left alone; one
            int means the in-plane axes (`(None, k, k)` for 3 axes).
        zscore: normalise each image by its own mean and standard deviation (MR, microscopy).
        order: image interpolation, "linear" or "cubic" (label maps are always "nearest").

    Raises:
        ConfigError: naming the argument, if the entries do not pair up, a spacing, size or
            multiple is not positive, a number is not finite, `clip` is not `low < high`, or
            `foreground_margin` is given without `crop_foreground`.
    """

    target_spacing: tuple[float | None, ...]
    size: tuple[int | None, ...]
    pad_value: float = -1024.0
    clip: tuple[float, float] | None = None
    crop_foreground: float | None = None
    foreground_margin: tuple[int | None, ...] | None = None
    multiple_of: tuple[int | None, ...] | None = None
    zscore: bool = False
    order: str = "linear"

    def __post_init__(self):
        try:
            spacing = tuple(None if s is None else float(s) for s in self.target_spacing)
            size = tuple(None if s is None else int(s) for s in self.size)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                "`target_spacing` and `size` must be lists of numbers or null. Received: "
                f"target_spacing={self.target_spacing!r}, size={self.size!r}"
            ) from err
        if len(spacing) != len(size):
            raise ConfigError(
                "`target_spacing` and `size` must have one entry per array axis. "
                f"Received: target_spacing={self.target_spacing}, size={self.size}"
            )
        if any(s is not None and not (np.isfinite(s) and s > 0) for s in spacing):
            raise ConfigError(
                f"`target_spacing` entries must be positive or null. Received: {self.target_spacing}"
            )
        if any(s is not None and s <= 0 for s in size):
            raise ConfigError(f"`size` entries must be positive or null. Received: size={self.size}")
        # A NaN pad value would reach the model wherever a case is padded.
        if not _is_finite_number(self.pad_value):
            raise ConfigError(
                f"`pad_value` must be a finite number. Received: pad_value={self.pad_value!r}"
            )
        object.__setattr__(self, "target_spacing", spacing)
        object.__setattr__(self, "size", size)
        self._check_v2_fields(len(size))

    def _check_v2_fields(self, n: int) -> None:
        clip = self.clip
        if clip is not None:
            ok = isinstance(clip, (list, tuple)) and len(clip) == 2
            if not (ok and all(_is_finite_number(c) for c in clip) and float(clip[0]) < float(clip[1])):
                raise ConfigError(
                    f"`clip` must be [low, high], finite numbers with low < high, or null. "
                    f"Received: clip={_short(clip)}"
                )
            object.__setattr__(self, "clip", (float(clip[0]), float(clip[1])))
        threshold = self.crop_foreground
        if threshold is not None:
            if not _is_finite_number(threshold):
                raise ConfigError(
                    "`crop_foreground` must be a finite threshold (e.g. -500 HU) or null. "
                    f"Received: crop_foreground={_short(threshold)}"
                )
            object.__setattr__(self, "crop_foreground", float(threshold))
        margin = _per_axis(self.foreground_margin, n, "foreground_margin", 0)
        if margin is not None and threshold is None:
            raise ConfigError(
                "`foreground_margin` needs `crop_foreground` (the threshold of the box it widens). "
                f"Received: foreground_margin={_short(self.foreground_margin)}, crop_foreground=None"
            )
        if margin is None and threshold is not None:
            margin = _per_axis(0, n, "foreground_margin", 0)
        object.__setattr__(self, "foreground_margin", margin)
        object.__setattr__(self, "multiple_of", _per_axis(self.multiple_of, n, "multiple_of", 1))
        if not isinstance(self.zscore, (bool, np.bool_)):
            raise ConfigError(f"`zscore` must be true or false. Received: zscore={_short(self.zscore)}")
        object.__setattr__(self, "zscore", bool(self.zscore))
        if self.order not in _IMAGE_ORDERS:
            raise ConfigError(
                f"`order` (image interpolation) must be one of {_IMAGE_ORDERS}. "
                f"Received: order={_short(self.order)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with `"version": PREPROCESSING_VERSION` (bundle manifests, caches)."""
        def listed(value):
            return None if value is None else list(value)

        return {
            "version": PREPROCESSING_VERSION,
            "target_spacing": list(self.target_spacing),
            "size": list(self.size),
            "pad_value": self.pad_value,
            "clip": listed(self.clip),
            "crop_foreground": self.crop_foreground,
            "foreground_margin": listed(self.foreground_margin),
            "multiple_of": listed(self.multiple_of),
            "zscore": self.zscore,
            "order": self.order,
            "crop_pad": "centre",
            "resample": f"{self.order} (image), nearest (labels); field of view kept",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """The spec of a `to_dict()` (e.g. a manifest's `input.preprocessing`).

        Raises:
            ConfigError: if the version is not implemented here (`preprocessing_version`), or
                a value is invalid.
            KeyError: if `target_spacing` or `size` is missing.
        """
        version = preprocessing_version(d)
        if version == 1:
            newer = [k for k in _V2_KEYS if k in d]
            if newer:
                raise ConfigError(
                    f"`input.preprocessing` keys {newer} need preprocessing version 2, but the "
                    f"spec records version 1 (no `version` key). Received: {_short(d)}"
                )
        return cls(
            target_spacing=tuple(d["target_spacing"]),
            size=tuple(d["size"]),
            pad_value=float(d.get("pad_value", -1024.0)),
            **{k: d[k] for k in _V2_KEYS if k in d},
        )


def preprocessing_version(d: Any) -> int:
    """The preprocessing version a spec dict records (1 when it has no "version").

    Raises:
        ConfigError: if `d` is not a dict, or its version is not one this code implements.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"`input.preprocessing` must be a mapping. Received: {_short(d)}")
    version = d.get("version", 1)
    if not _is_int(version) or int(version) not in PREPROCESSING_VERSIONS:
        raise ConfigError(
            "`input.preprocessing.version` must be a preprocessing version this serving "
            f"implements, one of {list(PREPROCESSING_VERSIONS)} (a newer one needs a newer "
            f"kerasmed). Received: version={_short(version)}"
        )
    return int(version)
