"""Config sections beyond the core ones of `kerasmed.config`: a task's own keys live in its section
(`classification:`), so the shared sections stay the same for every task."""

from __future__ import annotations

from typing import Literal

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
