"""Experiment configuration: a validated YAML file.

Every section forbids unknown keys, so a typo fails loudly instead of being silently ignored, and
every float must be finite (YAML `.nan` and `.inf` are refused). Errors name the key path, the
expected form and the received value, e.g.::

    config key `sampling.patch_size` must have 2 entries, each greater than 0.
    Received: sampling.patch_size=[-96, 96]

Rules over several keys (a patch size and the model depth, the class names and the number of
classes) are checked here too, so a config that would fail deep inside TensorFlow, or train a model
that `export` then refuses, is refused before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import pydantic
import yaml
from pydantic import BaseModel, Field, PositiveInt

from kerasmed.config_sections import (  # noqa: F401 - DEFAULT_INTENSITY_SHIFT: re-exported
    DEFAULT_INTENSITY_SHIFT,
    AugmentationConfig,
    ClassificationConfig,
    _RuleError,
    _Section,
)
from serving.atomic import atomic_write_text
from serving.errors import ConfigError
from serving.io.registry import check_read_options
from serving.preprocessing import PreprocessSpec


def _split_fractions(v: tuple[float, float, float]) -> tuple[float, float, float]:
    """The rule of every (train, val, test) split: shares of the cases (or patients)."""
    if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6 or not v[0] > 0:
        raise ValueError("must be 3 non-negative numbers (train, val, test) summing to 1, with train > 0")
    return v


# Checked when the config is read (by `train` too), not only when the split is drawn.
SplitFractions = Annotated[tuple[float, float, float], pydantic.AfterValidator(_split_fractions)]


class ColumnsConfig(_Section):
    """Manifest column names (`kerasmed.data.manifest` reads them under these canonical names).

    `mask`, `label`, `split` and `patient_id` may be null: no such column. `split` and
    `patient_id` are optional at their default names: a manifest without a `split` column is
    split by `data.split`, one without `patient_id` groups by case. Any other name must be a
    column of the manifest.
    """

    case_id: str = "case_id"
    image: str = "image_path"
    mask: str | None = "mask_path"
    label: str | None = None
    findings: tuple[str, ...] | None = Field(
        None, description="Multi-label: one 0/1 column per finding (its name is the class name).")
    split: str | None = "split"
    patient_id: str | None = "patient_id"


class SplitConfig(_Section):
    """The seeded split of a manifest without a split column (and of an ImageFolder tree)."""

    fractions: SplitFractions = Field(
        (0.7, 0.15, 0.15), description="train, val, test shares of the patients (else cases)."
    )
    seed: int = 0



class DataConfig(_Section):
    root: str = Field("data/synthetic_lung_ct", description="Folder holding manifest.csv.")
    manifest: str = Field("manifest.csv", description="CSV manifest, relative to `root`.")
    cache_dir: str | None = Field(None, description="Preprocessed cache; default <root>/cache.")
    format: Literal["csv", "imagefolder"] = Field(
        "csv", description="`csv`: the manifest; `imagefolder`: `root/<class>/<image>`."
    )
    columns: ColumnsConfig = ColumnsConfig()
    split: SplitConfig = SplitConfig()
    read: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Reader options by reader name, for every file of the dataset (training, "
        "check-data, evaluation, parity), e.g. {dicom: {pick: most_slices}, nifti: {canonical: "
        "true}}; see serving.io.check_read_options.",
    )

    @pydantic.field_validator("read")
    @classmethod
    def _reader_options(cls, v):
        try:
            return check_read_options(v)
        except ConfigError as err:
            raise _RuleError(f"config key `data.read`: {err}") from err


class SyntheticConfig(_Section):
    num_cases: PositiveInt = 24
    seed: int = 0
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (48, 256, 256)
    split_fractions: SplitFractions = (0.7, 0.2, 0.1)  # the rule of `generate.split_counts`
    patches_per_case: PositiveInt = Field(40, description="Classification: patches cut from "
                                          "each synthetic volume.")



class PreprocessingConfig(_Section):
    target_spacing: tuple[float | None, float | None, float | None] = (None, 1.5, 1.5)
    size: tuple[PositiveInt | None, PositiveInt | None, PositiveInt | None] = (None, 240, 240)
    pad_value: float = -1024.0
    # Off by default (see serving.preprocessing for the order of the steps).
    clip: tuple[float, float] | None = Field(None, description="[low, high] intensity clip, first.")
    crop_foreground: float | None = Field(
        None, description="Crop to the box of voxels above this (e.g. -500 HU = body)."
    )
    foreground_margin: tuple[
        pydantic.NonNegativeInt | None, pydantic.NonNegativeInt | None, pydantic.NonNegativeInt | None
    ] | None = Field(None, description="Voxels around the box per axis, null = keep the axis; "
                     "one integer = (null, k, k). Default (null, 0, 0): every slice kept.")
    multiple_of: tuple[PositiveInt | None, PositiveInt | None, PositiveInt | None] | None = Field(
        None, description="Pad each axis up to a multiple; one integer = (null, k, k)."
    )
    zscore: bool = Field(False, description="Per-image z-score (MR, microscopy).")
    order: Literal["linear", "cubic"] = Field("linear", description="Image interpolation.")

    @pydantic.field_validator("target_spacing")
    @classmethod
    def _positive(cls, v):
        if any(s is not None and s <= 0 for s in v):
            raise ValueError("entries must be positive millimetres or null")
        return v

    @pydantic.field_validator("foreground_margin", "multiple_of", mode="before")
    @classmethod
    def _in_plane(cls, v, info):
        # One integer means y and x: the slice axis of a 2D slice model is left alone.
        if not isinstance(v, int) or isinstance(v, bool):
            return v
        if v < (1 if info.field_name == "multiple_of" else 0):
            kind = "positive" if info.field_name == "multiple_of" else "non-negative"
            raise ValueError(f"must be a {kind} integer or 3 of them (null = leave the axis)")
        return (None, v, v)

    @pydantic.field_validator("clip")
    @classmethod
    def _clip_range(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError("must be [low, high] with low < high")
        return v

    @pydantic.model_validator(mode="after")
    def _margin_needs_threshold(self):
        if self.foreground_margin is not None and self.crop_foreground is None:
            raise _RuleError(
                "config key `preprocessing.foreground_margin` needs `preprocessing.crop_foreground` "
                "(the threshold of the box it widens). Received: preprocessing.foreground_margin="
                f"{list(self.foreground_margin)}, preprocessing.crop_foreground=None"
            )
        return self

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(
            self.target_spacing, self.size, self.pad_value, clip=self.clip,
            crop_foreground=self.crop_foreground, foreground_margin=self.foreground_margin,
            multiple_of=self.multiple_of, zscore=self.zscore, order=self.order,
        )


class SamplingConfig(_Section):
    patch_size: tuple[PositiveInt, PositiveInt] = (96, 96)
    positive_fraction: float = Field(0.5, ge=0.0, le=1.0)
    batch_size: PositiveInt = Field(16, description="Patches per replica; the global batch is "
                                    "batch_size x replicas (workers x local devices).")
    shuffle_buffer: PositiveInt = 256


_HU_WINDOW_RULE = "must be [low, high] in HU with low < high (a window of positive width)"
# Models built on a `keras.applications` backbone (`model.backbone`, `model.weights`), with the
# smallest image side those backbones take (`kerasmed.models.transfer.MIN_SIDE`).
BACKBONE_MODELS = {"transfer": 32}


class ModelConfig(_Section):
    name: str = "unet2d"
    spatial_dims: Literal[2, 3] = Field(2, description="3: volumes in, for 3D classifiers.")
    backbone: str | None = Field(None, description="keras.applications backbone (`transfer`).")
    weights: str | None = Field(None, description="Local weights file of the backbone; nothing "
                                "downloads.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    context_slices: PositiveInt = Field(
        1, description="Odd number of neighbouring slices as channels (2.5D)."
    )
    num_classes: PositiveInt = 1
    filters: PositiveInt = 16
    depth: PositiveInt = 3
    normalization: Literal["batch", "group", "none"] = "batch"
    hu_window: tuple[float, float] = (-1000.0, 400.0)
    intensity: Literal["hu_window", "ct_fingerprint", "none"] = Field(
        "hu_window",
        description="First layer: `hu_window` (clip to model.hu_window, scale to [0, 1]), "
        "`ct_fingerprint` (nnU-Net CT normalisation from the training set's fingerprint) or `none`.",
    )
    class_names: tuple[str, ...] = ("background", "nodule")

    @pydantic.field_validator("context_slices")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError("must be odd, so the predicted slice is the centre one")
        return v

    @pydantic.field_validator("hu_window", mode="before")
    @classmethod
    def _two_bounds(cls, v):
        if isinstance(v, (list, tuple)) and len(v) != 2:
            raise ValueError(_HU_WINDOW_RULE)
        return v

    @pydantic.field_validator("hu_window")
    @classmethod
    def _window(cls, v):
        # HUWindow divides by high - low: a reversed or empty window fails when the model is built.
        if not v[0] < v[1]:
            raise ValueError(_HU_WINDOW_RULE)
        return v

    @pydantic.model_validator(mode="after")
    def _backbone_needs_transfer(self):
        # Only the keras.applications builder takes these; any other would fail on the keyword.
        given = {k: getattr(self, k) for k in ("backbone", "weights") if getattr(self, k) is not None}
        if given and self.name not in BACKBONE_MODELS:
            keys, verb, it = ("key", "is", "it") if len(given) == 1 else ("keys", "are", "them")
            raise _RuleError(
                f"config {keys} {' and '.join(f'`model.{k}`' for k in given)} {verb} for a model on a "
                f"keras.applications backbone (`model.name`: {', '.join(BACKBONE_MODELS)}); set {it} "
                f"to null for model.name={self.name!r}. Received: model.name={self.name!r}, "
                + ", ".join(f"model.{k}={v!r}" for k, v in given.items())
            )
        return self

    @pydantic.model_validator(mode="after")
    def _classes_named(self):
        # The bundle writer's rule: one sigmoid channel is named by its foreground class,
        # optionally preceded by the background; C softmax channels by C names.
        allowed = (1, 2) if self.num_classes == 1 else (self.num_classes,)
        if len(self.class_names) not in allowed:
            raise _RuleError(
                f"config key `model.class_names` must hold {' or '.join(map(str, allowed))} "
                f"names for model.num_classes={self.num_classes}. Received: "
                f"model.class_names={list(self.class_names)}, model.num_classes={self.num_classes}"
            )
        return self


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
    task: str = Field("segmentation", description="What the model is for: a task registered in "
                      "kerasmed.tasks (segmentation, classification).")
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
    classification: ClassificationConfig = ClassificationConfig()

    @pydantic.field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v):
        # The run folder is `output_dir/name`: a name with a separator or `..` would put it
        # elsewhere (`../../x`), or in a folder of another run (`a/b`).
        if v.strip() in ("", ".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError("must be one plain folder name (the run folder under `output_dir`): "
                             "not empty, `.` or `..`, and without `/`, `\\` or NUL")
        return v

    @pydantic.field_validator("task")
    @classmethod
    def _known_task(cls, v):
        from kerasmed.tasks import TRAINING_TASKS

        if v not in TRAINING_TASKS:
            raise ValueError(f"must be one of {TRAINING_TASKS.names()}")
        return v

    @pydantic.model_validator(mode="after")
    def _fits_the_task(self):
        # Rules over several keys that depend on the task (e.g. a U-Net's patch size and depth).
        from kerasmed.tasks import training_task

        try:
            training_task(self.task).check_config(self)
        except ConfigError as err:
            raise _RuleError(str(err)) from err
        return self

    def check_slice_shape(self, shape: tuple[int, ...], source: str) -> None:
        """Check a preprocessed slice shape the config leaves to the data (`preprocessing.size`
        null for y or x) against the model, once the data is known.

        Args:
            shape: `(..., H, W)` shape of a preprocessed volume or slice.
            source: what it came from (a case or file), for the message.

        Raises:
            ConfigError: if H or W is not a multiple of `2**model.depth`.
        """
        multiple = 2**self.model.depth
        h, w = (int(n) for n in shape[-2:])
        if h % multiple or w % multiple:
            raise ConfigError(
                f"Preprocessed slices must be multiples of 2**model.depth = {multiple} on each side; "
                f"`preprocessing.size` is null there, so the data decides: set it, or change "
                f"`model.depth`. Received: {h}x{w} slices from {source}, "
                f"preprocessing.size={list(self.preprocessing.size)}, model.depth={self.model.depth}"
            )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _RuleError):
        return str(cause)
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
    if error["type"] == "model_type":  # pydantic: "a valid dictionary or instance of ModelConfig"
        return f"config key `{key}` must be a mapping of keys (a section). Received: {key}={received!r}"
    # A list of the wrong length: pydantic reports a short one as a missing entry ("Field
    # required" at `key.2`) and a long one in its own words; name the key and its whole value.
    loc = error["loc"]
    short = error["type"] == "missing" and len(loc) > 1 and isinstance(loc[-1], int)
    if short or error["type"] == "too_long":
        tuple_loc = loc[:-1] if short else loc
        length = _tuple_length(tuple_loc)
        if length is not None:
            key = ".".join(str(p) for p in tuple_loc)
            return (f"config key `{key}` must have {length} entries. "
                    f"Received: {key}={error['input']!r}")
    # A validator's own message states the rule; pydantic would prefix it with "Value error, ".
    message = str(cause) if error["type"] == "value_error" and cause is not None else error["msg"]
    return f"config key `{key}`: {message}. Received: {key}={received!r}"


def _tuple_length(loc) -> int | None:
    """The number of entries of the fixed-length tuple field at `loc`, else None."""
    section = _section_at(loc[:-1])
    field = section.model_fields.get(loc[-1]) if section and isinstance(loc[-1], str) else None
    if field is None or get_origin(field.annotation) is not tuple:
        return None
    args = get_args(field.annotation)
    return len(args) if args and Ellipsis not in args else None


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
    """Apply `section.key=value` overrides (value parsed as YAML) to a raw config mapping.

    Raises:
        ConfigError: if an override is not `key=value` with a dotted key of non-empty names, its
            value is not YAML, or its key goes through a key that is not a section.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(
                "Overrides (`--set`) must look like `section.key=value`, with a dotted key of "
                f"non-empty names. Received: {item!r}"
            )
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"The value of override `{key}` must be valid YAML (quote it if it is a string). "
                f"Received: {item!r} ({reason})"
            ) from err
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override `{key}` goes through a non-section key. Received: {item!r}")
        node[parts[-1]] = parsed
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config file, applying `section.key=value` overrides.

    Raises:
        ConfigError: if the file is missing, unreadable, not UTF-8, not YAML, empty, or holds a
            bad key or value.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file {path} must be a YAML file. Received: a folder")
    if not path.is_file():
        raise ConfigError(f"Config file not found. Received: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"Config file {path} must be UTF-8 text. Received: byte 0x{err.object[err.start]:02x} "
            f"at offset {err.start} is not UTF-8"
        ) from err
    except OSError as err:
        raise ConfigError(f"Config file {path} must be readable. Received: {err}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"Config file {path} is not valid YAML. Received: {str(err).replace(chr(10), ' ')}"
        ) from err
    if raw is None:
        # An empty file (or only comments) would silently run on every default.
        raise ConfigError(
            f"Config file {path} must hold a mapping of config sections. Received: an empty file"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping. Received: {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(path))


def shipped_config(name: str = "lung_nodule_seg_2d.yaml") -> Path:
    """A config file shipped with kerasmed, found wherever kerasmed is installed.

    A wheel carries the repository's `configs/` as package data `kerasmed/configs/` (a symlink
    in the source tree, see pyproject.toml); a source checkout or editable install finds them
    beside the package, so a command works from any folder.

    Args:
        name: file name in `configs/`.

    Raises:
        ConfigError: if no shipped config has that name.
    """
    package = Path(__file__).resolve().parent
    folders = (package / "configs", package.parent / "configs")
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(
        f"`{name}` must be a config shipped with kerasmed (in {' or '.join(map(str, folders))}). "
        f"Received: {name}"
    )


def save_config(config: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
