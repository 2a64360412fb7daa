"""Experiment configuration: a validated YAML file.

Every section forbids unknown keys, so a typo fails loudly instead of being silently ignored, and
every float must be finite (YAML `.nan` and `.inf` are refused). Errors name the key path, the
expected form and the received value, e.g.::

    config key `sampling.patch_size` must have 2 entries, each greater than 0.
    Received: sampling.patch_size=[-96, 96]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from serving.errors import ConfigError
from serving.preprocessing import PreprocessSpec


class _Section(BaseModel):
    # No float in an experiment has a use for NaN or +-inf (YAML `.nan`, `.inf`): a NaN pad value
    # or HU window trains and predicts NaN without an error, and `gt=0` lets `.inf` through.
    # One setting for every float field of every section, tuple entries included.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    root: str = Field("data/synthetic_lung_ct", description="Folder holding manifest.csv.")
    manifest: str = Field("manifest.csv", description="CSV manifest, relative to `root`.")
    cache_dir: str | None = Field(None, description="Preprocessed cache; default <root>/cache.")


class SyntheticConfig(_Section):
    num_cases: PositiveInt = 24
    seed: int = 0
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (48, 256, 256)
    split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1)


class PreprocessingConfig(_Section):
    target_spacing: tuple[float | None, float | None, float | None] = (None, 1.5, 1.5)
    size: tuple[PositiveInt | None, PositiveInt | None, PositiveInt | None] = (None, 240, 240)
    pad_value: float = -1024.0

    @pydantic.field_validator("target_spacing")
    @classmethod
    def _positive(cls, v):
        if any(s is not None and s <= 0 for s in v):
            raise ValueError("entries must be positive millimetres or null")
        return v

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(self.target_spacing, self.size, self.pad_value)


class SamplingConfig(_Section):
    patch_size: tuple[PositiveInt, PositiveInt] = (96, 96)
    positive_fraction: float = Field(0.5, ge=0.0, le=1.0)
    batch_size: PositiveInt = Field(16, description="Patches per replica; the global batch is "
                                    "batch_size x replicas (workers x local devices).")
    shuffle_buffer: PositiveInt = 256


class AugmentationConfig(_Section):
    flip: bool = True
    rot90: bool = True
    intensity_shift_hu: float = Field(20.0, ge=0.0)
    intensity_scale: float = Field(0.05, ge=0.0, lt=1.0)


class ModelConfig(_Section):
    name: str = "unet2d"
    context_slices: PositiveInt = Field(
        1, description="Odd number of neighbouring slices as channels (2.5D)."
    )
    num_classes: PositiveInt = 1
    filters: PositiveInt = 16
    depth: PositiveInt = 3
    normalization: Literal["batch", "group", "none"] = "batch"
    hu_window: tuple[float, float] = (-1000.0, 400.0)
    class_names: tuple[str, ...] = ("background", "nodule")


    @pydantic.field_validator("context_slices")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError("must be odd, so the predicted slice is the centre one")
        return v


class TrainingConfig(_Section):
    epochs: PositiveInt = 20
    steps_per_epoch: PositiveInt = 50
    learning_rate: float = Field(1e-3, gt=0.0)
    mixed_precision: Literal["float32", "auto", "mixed_float16", "mixed_bfloat16"] = "float32"
    early_stopping_patience: PositiveInt = 6
    dice_weight: float = Field(1.0, ge=0.0)
    max_val_slices: PositiveInt = 64
    max_minutes: float | None = Field(None, gt=0.0)
    deterministic: bool = Field(
        False,
        description="Seed everything and enable TF op determinism: two runs on one machine give "
        "bit-identical weights (slower).",
    )


class EvaluationConfig(_Section):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: PositiveInt = 8
    baseline_threshold_hu: float = -500.0
    split: Literal["train", "val", "test"] = "val"


class Config(_Section):
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    sampling: SamplingConfig = SamplingConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    received: Any = raw
    for part in error["loc"]:
        if isinstance(received, dict):
            received = received.get(part)
        elif isinstance(received, (list, tuple)) and isinstance(part, int) and part < len(received):
            received = received[part]
        else:
            received = None
    if error["type"] == "extra_forbidden":
        section = _section_at(error["loc"][:-1])
        valid = sorted(section.model_fields) if section else []
        return f"Unknown config key `{key}`; valid keys here: {valid}. Received: {key}={received!r}"
    return f"config key `{key}`: {error['msg']}. Received: {key}={received!r}"


def _section_at(loc) -> type[BaseModel] | None:
    cls: Any = Config
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        cls = annotation
    return cls


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping.

    Raises:
        ConfigError: naming the first bad key, what was expected and what was received.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping of sections. Received: {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_describe(first, raw)}{more}") from err


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (value parsed as YAML) to a raw config mapping."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Overrides must look like `section.key=value`. Received: {item!r}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override `{key}` goes through a non-section key. Received: {item!r}")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config file, applying `section.key=value` overrides.

    Raises:
        ConfigError: if the file is missing, is not YAML, or holds a bad key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found. Received: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML. Received: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping. Received: {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(path))


def save_config(config: Config, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)
