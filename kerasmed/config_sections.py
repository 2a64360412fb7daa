"""Config sections beyond the core ones of `kerasmed.config`: a task's own keys live in its section
(`classification:`), so the shared sections stay the same for every task; and `augmentation:`,
whose rules over its keys would push `kerasmed.config` past its size."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _RuleError(ValueError):
    """A broken rule over one or more keys whose message is the whole error, naming every key
    and what was received (raised inside validators; pydantic wraps it)."""


class _Section(BaseModel):
    # No float in an experiment has a use for NaN or +-inf (YAML `.nan`, `.inf`): a NaN pad value
    # or HU window trains and predicts NaN without an error, and `gt=0` lets `.inf` through.
    # One setting for every float field of every section, tuple entries included.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ClassificationConfig(_Section):
    """Keys of `task: classification` (ignored by other tasks)."""

    class_balance: Literal["sampling", "weights", "none"] = Field(
        "sampling", description="`sampling`: every batch draws each class equally often; "
        "`weights`: the loss weighs each class by n / (classes x n_class); `none`.",
    )
    min_sensitivity: float | None = Field(
        None, gt=0.0, le=1.0, description="Operating point: the highest threshold whose "
        "validation sensitivity is at least this; null = `evaluation.threshold`.",
    )
    temperature_scaling: bool = Field(
        True, description="Fit a temperature on the evaluation split's predictions; the bundle "
        "records it and its graph divides the logits by it.",
    )
    bootstrap: PositiveInt = Field(1000, description="Resamples of the AUC's 95% interval.")
    fine_tune_epochs: int = Field(
        0, ge=0, description="Transfer learning: epochs of phase 2 (top blocks unfrozen) after "
        "`training.epochs` with the backbone frozen; 0 = one phase.",
    )
    fine_tune_blocks: PositiveInt = Field(1, description="Backbone blocks unfrozen in phase 2.")
    fine_tune_learning_rate: float = Field(1e-5, gt=0.0)


# 20 HU on the default CT window (-1000, 400): the flagship's shift since its first release.
DEFAULT_INTENSITY_SHIFT = 20.0 / 1400.0


class AugmentationConfig(_Section):
    """Random flips, 90-degree turns and intensity jitter of the training examples.

    The intensity jitter is `image * (1 + U(-intensity_scale, intensity_scale)) + U(-shift,
    shift)`, in the raw units the model takes. The shift is `intensity_shift` intensity units
    (`kerasmed.data.intensity.intensity_unit`: what the model's first layer, or the z-score,
    maps onto one unit), so it means the same on CT, MR and microscopy; or, instead,
    `intensity_shift_hu` in raw input units (HU for CT), as given.
    """

    flip: bool = True
    rot90: bool = True
    intensity_shift: float | None = Field(
        DEFAULT_INTENSITY_SHIFT, ge=0.0,
        description="Shift, a fraction of the intensity unit: the `model.hu_window` width, the "
        "fingerprint's std (`ct_fingerprint`; `none`: the training images' std), or 1 with "
        "`preprocessing.zscore`. Default 20/1400: +-20 HU on the (-1000, 400) window.",
    )
    intensity_shift_hu: float | None = Field(
        None, ge=0.0, description="Instead of `intensity_shift`: the shift in raw input units "
        "(HU for CT), whatever the model's intensity layer.",
    )
    intensity_scale: float = Field(
        0.05, ge=0.0, lt=1.0, description="Gain 1 + U(-s, s), unit-free, applied before the shift "
        "(about raw 0: on z-scored data, the image mean).",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_shift(cls, data):
        # Setting the absolute shift replaces the relative default; setting both is ambiguous.
        if not isinstance(data, dict) or data.get("intensity_shift_hu") is None:
            return data
        if data.get("intensity_shift") is not None:
            raise _RuleError(
                "config keys `augmentation.intensity_shift` (a fraction of the intensity unit) "
                "and `augmentation.intensity_shift_hu` (raw input units) say the same thing: set "
                "one, the other null. Received: augmentation.intensity_shift="
                f"{data['intensity_shift']!r}, augmentation.intensity_shift_hu="
                f"{data['intensity_shift_hu']!r}"
            )
        return {**data, "intensity_shift": None}

    @pydantic.model_validator(mode="after")
    def _some_shift(self):
        if self.intensity_shift is None and self.intensity_shift_hu is None:
            raise _RuleError(
                "config key `augmentation.intensity_shift` must be a number (0: no shift), or "
                "`augmentation.intensity_shift_hu` set instead. Received: "
                "augmentation.intensity_shift=None, augmentation.intensity_shift_hu=None"
            )
        return self
