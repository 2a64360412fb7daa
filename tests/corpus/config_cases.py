"""Corpus cases: config."""

from __future__ import annotations

import math

from kerasmed.config import config_from_dict, load_config
from serving.errors import ConfigError
from tests.corpus.harness import (
    CASES,
    CONFIG,
    Api,
    Case,
    Work,
    case,
)

# --- config ---------------------------------------------------------------------------------------
# (id, content of the config file, --set overrides, needles). A dict merges sections into the
# shipped config; str/bytes are the file itself. "<path>" in a needle stands for the file.

CONFIG_CASES = [
    ("unknown-key", {"model": {"filterz": 8}}, (),
     ("<path>", "Unknown config key `model.filterz`", "'filters'", "Received: model.filterz=8")),
    ("unknown-section", {"modle": {"depth": 3}}, (),
     ("<path>", "Unknown config key `modle`", "'model'", "Received: modle=")),
    ("section-not-a-mapping", {"model": 5}, (),
     ("<path>", "config key `model` must be a mapping of keys (a section)", "Received: model=5")),
    ("negative-patch-size", {"sampling": {"patch_size": [-96, 96]}}, (),
     ("<path>", "`sampling.patch_size.0`", "greater than 0", "Received: sampling.patch_size.0=-96")),
    ("patch-size-not-multiple-of-2**depth", {"sampling": {"patch_size": [60, 64]}}, (),
     ("<path>", "`sampling.patch_size` must hold multiples of 2**model.depth = 8",
      "Received: sampling.patch_size=[60, 64], model.depth=3")),
    ("patch-size-too-small-for-depth-5", {"sampling": {"patch_size": [48, 48]}, "model": {"depth": 5}},
     (), ("<path>", "2**model.depth = 32", "Received: sampling.patch_size=[48, 48], model.depth=5")),
    ("slice-size-not-multiple-of-2**depth", {"preprocessing": {"size": [None, 250, 256]}}, (),
     ("<path>", "`preprocessing.size` must hold null or multiples of 2**model.depth = 8",
      "Received: preprocessing.size=[None, 250, 256]")),
    ("hu-window-reversed", {"model": {"hu_window": [400, -1000]}}, (),
     ("<path>", "`model.hu_window`", "low < high", "Received: model.hu_window=[400, -1000]")),
    ("hu-window-zero-width", {"model": {"hu_window": [0, 0]}}, (),
     ("<path>", "`model.hu_window`", "low < high", "Received: model.hu_window=[0, 0]")),
    ("hu-window-three-values", {"model": {"hu_window": [-1000, 0, 400]}}, (),
     ("<path>", "`model.hu_window`", "[low, high]", "Received: model.hu_window=[-1000, 0, 400]")),
    ("hu-window-nan", {"model": {"hu_window": [math.nan, 400]}}, (),
     ("<path>", "`model.hu_window.0`", "finite", "Received: model.hu_window.0=nan")),
    ("pad-value-nan", {"preprocessing": {"pad_value": math.nan}}, (),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=nan")),
    ("pad-value-inf", {"preprocessing": {"pad_value": -math.inf}}, (),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=-inf")),
    ("pad-value-string", {"preprocessing": {"pad_value": "air"}}, (),
     ("<path>", "`preprocessing.pad_value`", "number", "Received: preprocessing.pad_value='air'")),
    ("learning-rate-inf", {"training": {"learning_rate": math.inf}}, (),
     ("<path>", "`training.learning_rate`", "finite", "Received: training.learning_rate=inf")),
    ("learning-rate-zero", {"training": {"learning_rate": 0}}, (),
     ("<path>", "`training.learning_rate`", "greater than 0", "Received: training.learning_rate=0")),
    ("target-spacing-zero", {"preprocessing": {"target_spacing": [None, 0, 1.25]}}, (),
     ("<path>", "`preprocessing.target_spacing`", "positive", "Received: preprocessing.target_spacing=")),
    ("target-spacing-minus-inf", {"preprocessing": {"target_spacing": [None, -math.inf, 1.25]}}, (),
     ("<path>", "`preprocessing.target_spacing.1`", "finite", "=-inf")),
    ("threshold-nan", {"evaluation": {"threshold": math.nan}}, (),
     ("<path>", "`evaluation.threshold`", "finite", "Received: evaluation.threshold=nan")),
    ("threshold-one", {"evaluation": {"threshold": 1.0}}, (),
     ("<path>", "`evaluation.threshold`", "less than 1", "Received: evaluation.threshold=1.0")),
    ("num-classes-3-with-two-class-names", {"model": {"num_classes": 3}}, (),
     ("<path>", "`model.class_names` must hold 3 names for model.num_classes=3",
      "Received: model.class_names=['background', 'nodule'], model.num_classes=3")),
    ("three-class-names-for-one-class", {"model": {"class_names": ["a", "b", "c"]}}, (),
     ("<path>", "`model.class_names` must hold 1 or 2 names", "Received: model.class_names=['a', 'b', 'c']")),
    ("split-fractions-negative", {"synthetic": {"split_fractions": [0.9, 0.3, -0.2]}}, (),
     ("<path>", "`synthetic.split_fractions`", "non-negative", "summing to 1",
      "Received: synthetic.split_fractions=[0.9, 0.3, -0.2]")),
    ("split-fractions-sum-below-1", {"synthetic": {"split_fractions": [0.5, 0.2, 0.1]}}, (),
     ("<path>", "`synthetic.split_fractions`", "summing to 1", "=[0.5, 0.2, 0.1]")),
    ("split-fractions-no-train", {"synthetic": {"split_fractions": [0.0, 0.5, 0.5]}}, (),
     ("<path>", "`synthetic.split_fractions`", "train > 0", "=[0.0, 0.5, 0.5]")),
    ("split-fractions-two-values", {"synthetic": {"split_fractions": [0.5, 0.5]}}, (),
     ("<path>", "`synthetic.split_fractions`", "Received: synthetic.split_fractions")),
    ("num-cases-zero", {"synthetic": {"num_cases": 0}}, (),
     ("<path>", "`synthetic.num_cases`", "greater than 0", "Received: synthetic.num_cases=0")),
    ("mixed-precision-unknown", {"training": {"mixed_precision": "fp8"}}, (),
     ("<path>", "`training.mixed_precision`", "'mixed_bfloat16'",
      "Received: training.mixed_precision='fp8'")),
    ("normalization-unknown", {"model": {"normalization": "layer"}}, (),
     ("<path>", "`model.normalization`", "'group'", "Received: model.normalization='layer'")),
    ("context-slices-even", {"model": {"context_slices": 4}}, (),
     ("<path>", "`model.context_slices`", "odd", "Received: model.context_slices=4")),
    ("depth-zero", {"model": {"depth": 0}}, (),
     ("<path>", "`model.depth`", "greater than 0", "Received: model.depth=0")),
    ("epochs-a-word", {"training": {"epochs": "ten"}}, (),
     ("<path>", "`training.epochs`", "integer", "Received: training.epochs='ten'")),
    ("deterministic-sometimes", {"training": {"deterministic": "sometimes"}}, (),
     ("<path>", "`training.deterministic`", "boolean", "Received: training.deterministic='sometimes'")),
    ("intensity-scale-one", {"augmentation": {"intensity_scale": 1.0}}, (),
     ("<path>", "`augmentation.intensity_scale`", "less than 1", "=1.0")),
    ("intensity-shift-and-shift-hu", {"augmentation": {"intensity_shift_hu": 20.0}}, (),
     ("<path>", "`augmentation.intensity_shift` (a fraction of the intensity unit)",
      "set one, the other null", "Received: augmentation.intensity_shift=0.014285714285714285, "
      "augmentation.intensity_shift_hu=20.0")),
    ("intensity-shift-negative", {"augmentation": {"intensity_shift": -0.1}}, (),
     ("<path>", "`augmentation.intensity_shift`", "greater than or equal to 0",
      "Received: augmentation.intensity_shift=-0.1")),
    ("intensity-shift-null", {"augmentation": {"intensity_shift": None}}, (),
     ("<path>", "`augmentation.intensity_shift` must be a number",
      "Received: augmentation.intensity_shift=None, augmentation.intensity_shift_hu=None")),
    ("max-minutes-zero", {"training": {"max_minutes": 0}}, (),
     ("<path>", "`training.max_minutes`", "greater than 0", "Received: training.max_minutes=0")),
    ("shape-two-values", {"synthetic": {"shape": [48, 256]}}, (),
     ("<path>", "`synthetic.shape`", "Received: synthetic.shape")),
    ("empty-file", "", (), ("Config file <path> must hold a mapping", "Received: an empty file")),
    ("comments-only", "# nothing yet\n", (), ("Config file <path> must hold a mapping", "an empty file")),
    ("non-utf8", CONFIG.read_bytes() + "# café\n".encode("latin-1"), (),
     ("Config file <path> must be UTF-8 text", "Received: byte 0xe9 at offset")),
    ("not-yaml", "model: [1, 2\n", (), ("Config file <path> is not valid YAML", "Received:")),
    ("top-level-list", "- model\n- training\n", (),
     ("Config file <path> must hold a mapping", "Received: list")),
    ("top-level-scalar", "5\n", (), ("Config file <path> must hold a mapping", "Received: int")),
    ("set-malformed-yaml", None, ("training.epochs=[1,",),
     ("The value of override `training.epochs` must be valid YAML", "Received: 'training.epochs=[1,'")),
    ("set-unclosed-brace", None, ("model.name={",),
     ("override `model.name` must be valid YAML", "Received: 'model.name={'")),
    ("set-without-equals", None, ("noequals",),
     ("Overrides (`--set`) must look like `section.key=value`", "Received: 'noequals'")),
    ("set-empty-key-part", None, ("training..epochs=3",),
     ("must look like `section.key=value`", "Received: 'training..epochs=3'")),
    ("set-empty-key", None, ("=3",), ("must look like `section.key=value`", "Received: '=3'")),
    ("set-through-a-value", None, ("training.epochs.max=3",),
     ("Override `training.epochs.max` goes through a non-section key", "Received: 'training.epochs.max=3'")),
    ("set-unknown-key", None, ("model.filterz=3",),
     ("<path>", "Unknown config key `model.filterz`", "Received: model.filterz=3")),
    ("set-pad-value-nan", None, ("preprocessing.pad_value=.nan",),
     ("<path>", "`preprocessing.pad_value`", "finite", "Received: preprocessing.pad_value=nan")),
]


def _config_case(content, overrides, needles, w: Work) -> Api:
    path = w.config(content)
    needles = tuple(n.replace("<path>", str(path)) for n in needles)
    return Api(lambda: load_config(path, list(overrides)), ConfigError, needles)


for _id, _content, _overrides, _needles in CONFIG_CASES:
    CASES.append(Case(f"config/{_id}",
                      lambda w, c=_content, o=_overrides, n=_needles: _config_case(c, o, n, w)))


@case("config/missing-file")
def _(w):
    path = w.path / "nope.yaml"
    return Api(lambda: load_config(path), ConfigError, ("Config file not found", f"Received: {path}"))


@case("config/a-folder-as-file")
def _(w):
    path = w.path / "configs"
    path.mkdir()
    return Api(lambda: load_config(path), ConfigError,
               (f"Config file {path} must be a YAML file. Received: a folder",), absent=("not found",))


@case("config/dict-not-a-mapping")
def _(w):
    return Api(lambda: config_from_dict(["model"]), ConfigError,
               ("config must be a YAML mapping of sections", "Received: list"))


@case("config/run-config-non-utf8")
def _(w):
    from kerasmed.run import load_run

    run = w.run_folder(config=b"name: caf\xe9\n")
    return Api(lambda: load_run(run), ConfigError,
               (f"Config file {run / 'config.yaml'} must be UTF-8 text", "Received: byte 0xe9"))


@case("config/demo-profile-unknown")
def _(w):
    from export.demo import prepare_demo

    return Api(lambda: prepare_demo(w.path / "demo", CONFIG, "huge"), ConfigError,
               ("`profile` must be one of ['fast', 'full', 'tiny']", "Received: 'huge'"))


@case("config/preprocess-spec-pad-value-nan")
def _(w):
    from serving.preprocessing import PreprocessSpec

    return Api(lambda: PreprocessSpec((None, 1.0, 1.0), (None, 32, 32), math.nan), ConfigError,
               ("`pad_value` must be a finite number", "Received: pad_value=nan"))
