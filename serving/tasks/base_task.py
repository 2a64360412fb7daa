"""The runtime side of a task: how a model is applied, what its output means, how two artefacts
are judged to agree. Numpy only: this runs on a device.

A task is everything that differs between segmentation, classification and detection; the
shared code (parity, predict, the bundle writer) asks the task and never branches on its name:

- `inputs(image, bundle, batch_size)`: the model inputs of one image, built once, so that every
  runner of a bundle (parity) is fed the very same arrays;
- `run(runner, inputs)`: the model's raw output for the image (on the preprocessed grid);
- `postprocess(output, inputs, bundle)`: that output turned into the task's result (a mask on the
  source grid; labels and probabilities at the operating point);
- `agreement(bundle)`: an `Agreement` that parity feeds case by case, reference and candidate;
- `output_spec(shape, class_names, postprocess)`: the manifest's `output` section;
- `write(result, out_dir, stem)`: the result in the user's formats.

`apply(runner, image, bundle)` is `run(runner, inputs(image, bundle))`, and `predict` is
`postprocess(apply(...))`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving.errors import ConfigError
from serving.image import Image
from serving.inference import predict_batches
from serving.preprocessing import PreprocessRecord
from serving.runners.base_runner import Runner


@dataclasses.dataclass
class CaseInputs:
    """The model inputs of one image: `batches` to feed a runner one at a time, and the record
    of the preprocessing that made them (to map an output back to the source grid)."""

    batches: list[np.ndarray]
    record: PreprocessRecord | None
    image: Image


class Agreement(ABC):
    """Task-level agreement of one artefact with the reference, gathered case by case.

    Args:
        bundle: the bundle compared (its operating threshold and class names).
    """

    # Tolerance fields (of `export.tolerances.Tolerances`) this task gates on.
    tolerance_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bundle):
        self.bundle = bundle
        self.per_case: dict[str, float] = {}

    @abstractmethod
    def add(self, case_id: str, reference: np.ndarray, candidate: np.ndarray, truth=None) -> None:
        """Compare one case's outputs (raw model outputs of one shape; NaN already counted)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """The task-level figures over the cases so far (JSON-ready)."""

    def gated_summary(self, tolerances) -> dict[str, Any]:
        """Figures that depend on `tolerances` (JSON-ready), recorded beside `summary()`."""
        return {}

    @abstractmethod
    def checks(self, tolerances) -> dict[str, bool]:
        """Pass/fail of each gated task-level criterion under `tolerances`."""

    @abstractmethod
    def describe(self, check: str, tolerances) -> str:
        """One sentence on why `check` failed, with the measured figure and the tolerance."""

    def columns(self, tolerances) -> dict[str, str]:
        """Report table columns: header -> formatted value."""
        return {name: _fmt(value) for name, value in self.summary().items()
                if not isinstance(value, (dict, list))}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5f}"
    return str(value)


def check_class_names(class_names, channels: int, what: str) -> None:
    """One output channel is named by its positive class, optionally preceded by the negative
    (background) one; C channels by C names.

    Raises:
        ConfigError: naming `what` (e.g. "a classifier with 3 output(s)") and the names received.
    """
    allowed = (1, 2) if channels == 1 else (channels,)
    if not all(isinstance(c, str) for c in class_names) or len(class_names) not in allowed:
        raise ConfigError(
            f"`class_names` must be {' or '.join(map(str, allowed))} strings for {what}. "
            f"Received: class_names={list(class_names)}"
        )


class RuntimeTask(ABC):
    """Base of the runtime side of every task (see the module docstring)."""

    name: ClassVar[str]
    # The manifest's `postprocessing` entries a bundle gets when its writer names none.
    postprocess_defaults: ClassVar[dict[str, Any]] = {"threshold": 0.5}

    @abstractmethod
    def inputs(self, image: Image, bundle, batch_size: int = 8) -> CaseInputs:
        """Preprocess `image` with the bundle's spec into model input batches."""

    def run(self, runner: Runner, inputs: CaseInputs) -> np.ndarray:
        """The runner's outputs on every batch, joined along the batch axis (float32)."""
        return predict_batches(runner, inputs.batches)

    def apply(self, runner: Runner, image: Image, bundle, batch_size: int = 8) -> np.ndarray:
        """The model's raw output on `image`."""
        return self.run(runner, self.inputs(image, bundle, batch_size))

    @abstractmethod
    def postprocess(self, output: np.ndarray, inputs: CaseInputs, bundle) -> dict[str, Any]:
        """The task's result from the model's raw output."""

    def predict(self, runner: Runner, image: Image, bundle, batch_size: int = 8) -> dict[str, Any]:
        """`postprocess(run(...))`: the task's result for one image."""
        inputs = self.inputs(image, bundle, batch_size)
        return self.postprocess(self.run(runner, inputs), inputs, bundle)

    @abstractmethod
    def informative(self, reference: np.ndarray, bundle) -> bool:
        """Whether a reference output holds a finding, so that agreement on it means something
        (two empty masks always agree); parity counts these golden cases."""

    @abstractmethod
    def agreement(self, bundle) -> Agreement:
        """A fresh `Agreement` for one artefact of `bundle`."""

    @abstractmethod
    def output_spec(self, shape: tuple, class_names, postprocess: dict) -> dict[str, Any]:
        """The manifest's `output` section for a model output of `shape` (batch axis first).

        Raises:
            ConfigError: if the class names or post-processing do not fit the output.
        """

    @abstractmethod
    def write(self, result: dict[str, Any], out_dir: str | Path, stem: str) -> list[Path]:
        """Write the result of one image into `out_dir`; returns the files written."""
