"""The parity engine: run every artefact of a bundle on validation cases and compare it to Keras.

For each case the bundle's task (`serving.tasks`) turns the raw image into model inputs, once
(preprocessed with the bundle's spec; slice stacks for segmentation); then every runner (Keras
reference first) runs on those same inputs, and a runner's `runtime_s` times its own calls only.
Per artefact it gathers element-wise errors on the probabilities, NaN/Inf counts, and the task's
agreement (segmentation: Dice between the artefact's mask and the Keras mask; classification:
label agreement, decision flips, AUC difference), and checks them against `DEFAULT_TOLERANCES`
(DESIGN.md, "Defaults that the whole project shares"), which every call can override.

Two guards keep a verdict honest:
- Agreement on cases without a finding is cheap (two empty masks have Dice 1.0), so an untrained
  model that predicts nothing would "agree" perfectly. The result counts the golden cases whose
  Keras output holds a finding (`RuntimeTask.informative`: mask foreground, a positive label)
  and fails when fewer than `min_foreground_cases` (default 1) do.
- On Ampere+ GPUs, TensorFlow and onnxruntime's CUDA provider run float32 convolutions in TF32
  by default. Parity runs with TF32 off (in TensorFlow for the Keras reference and SavedModel, in
  the ONNX runners' CUDA options) unless asked otherwise, and records every runner's provider and
  precision mode.

Case ids stay in memory (`ParityResult.cases`, `agreement` keys): a manifest's case id may be
a patient ID, and the report is written inside the bundle that ships to devices. `to_dict()`, what
the report files and the manifest record, names cases by position instead (`#0`, `#1`...: the
order parity read them, which for `kerasmed compare` is the split's rows in manifest order);
`to_dict(local=True)` keeps the ids for reports that stay on this machine.

Example:
    >>> result = run_parity("runs/lung/bundle", [("case1", image1), ("case2", image2)])
    >>> result.verdict, result.failures
    ('pass', {})
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterable, Iterator

import numpy as np
from tqdm import tqdm

import kerasmed.keras_runner  # noqa: F401 - registers the "keras" reference runner
from export.parity_result import (  # noqa: F401 - re-exported: the engine's results
    GOLDEN_CASES,
    REFERENCE,
    VACUOUS_MESSAGE,
    ArtefactParity,
    ParityResult,
)

# Re-exported: callers and reports import tolerances from the parity engine.
from export.tolerances import (  # noqa: E402,F401
    DEFAULT_TOLERANCES,
    Overrides,
    Tolerances,
    artefact_kind,
    resolve_tolerances,
)
from serving.bundle import Bundle, load_bundle
from serving.errors import ConfigError, ParityError
from serving.runners.saved_model_runner import tensorflow_precision
from serving.tasks import runtime_task


class _Reservoir:
    """Uniform sample of `size` elements from a stream of arrays, O(size) work per array.

    Every element gets an implicit uniform key and the sample keeps the `size` smallest keys. For
    an array of `n > size` elements only its `size` smallest keys can matter: their largest is
    Beta(size, n - size + 1) distributed and the others are uniform below it, at a uniform random
    subset of positions.
    """

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.keys = np.empty(0)
        self.values = np.empty((0, 2), np.float32)

    def add(self, reference: np.ndarray, other: np.ndarray) -> None:
        n, k, rng = reference.size, self.size, self.rng
        if k <= 0:
            return
        if n > k:
            top = rng.beta(k, n - k + 1)
            keys = np.append(rng.uniform(0.0, top, k - 1), top)
            positions = rng.choice(n, k, replace=False)
        else:
            keys, positions = rng.uniform(size=n), np.arange(n)
        pairs = np.stack([reference.ravel()[positions], other.ravel()[positions]], axis=1)
        self.keys = np.concatenate([self.keys, keys])
        self.values = np.concatenate([self.values, pairs.astype(np.float32)])
        if self.keys.size > k:
            keep = np.argpartition(self.keys, k - 1)[:k]
            self.keys, self.values = self.keys[keep], self.values[keep]


class _Accumulator:
    """Running statistics of one artefact against the reference: element-wise errors here, the
    task-level agreement in the task's `Agreement`."""

    def __init__(self, sample_size: int, rng: np.random.Generator, agreement):
        self.max_abs, self.sum_abs, self.count, self.nan, self.inf = 0.0, 0.0, 0, 0, 0
        self.agreement = agreement
        self.runtime = 0.0
        self.shape_mismatches: dict[str, str] = {}
        self.reservoir = _Reservoir(sample_size, rng)

    def add(self, case_id, reference, output, truth) -> None:
        self.agreement.add(case_id, reference, output, truth)
        if output.shape != reference.shape:
            self.shape_mismatches[case_id] = f"{output.shape} != {reference.shape}"
            return
        # |output - reference| in float64, computed in place to spare two 8-byte temporaries.
        err = output.astype(np.float64)
        err -= reference
        np.abs(err, out=err)
        finite = np.isfinite(err)
        if finite.all():  # the usual case: no NaN/Inf to count or leave out
            self.max_abs = max(self.max_abs, float(err.max()))
            self.sum_abs += float(err.sum())
            self.count += err.size
        else:
            self.nan += int(np.count_nonzero(np.isnan(output)))
            self.inf += int(np.count_nonzero(np.isinf(output)))
            if finite.any():
                self.max_abs = max(self.max_abs, float(err[finite].max()))
                self.sum_abs += float(err[finite].sum())
                self.count += int(np.count_nonzero(finite))
        self.reservoir.add(reference, output)

    @property
    def min_passing_defined(self) -> bool:
        """Whether some max-abs tolerance would pass: every output was compared and finite."""
        return self.count > 0 and self.nan + self.inf == 0 and not self.shape_mismatches

    def finish(self, entry, tolerances: Tolerances, provider: str) -> ArtefactParity:
        checks = {"finite": self.nan + self.inf == 0, "shape": not self.shape_mismatches}
        if tolerances.max_abs is not None:
            checks["max_abs"] = self.max_abs <= tolerances.max_abs
        task_checks = self.agreement.checks(tolerances)
        checks.update(task_checks)
        return ArtefactParity(
            key=entry.get("key", entry["format"]),
            format=entry["format"],
            precision=entry.get("precision", "fp32"),
            file=entry["file"],
            sha256=entry["sha256"],
            kind=artefact_kind(entry),
            provider=provider,
            tolerances=tolerances,
            max_abs_error=self.max_abs,
            mean_abs_error=self.sum_abs / self.count if self.count else float("nan"),
            min_passing_max_abs=self.max_abs if self.min_passing_defined else None,
            nan_count=self.nan,
            inf_count=self.inf,
            agreement=dict(self.agreement.per_case),
            task_summary={**self.agreement.summary(), **self.agreement.gated_summary(tolerances)},
            task_columns=self.agreement.columns(tolerances),
            task_messages={name: self.agreement.describe(name, tolerances)
                           for name, ok in task_checks.items() if not ok},
            shape_mismatches=dict(self.shape_mismatches),
            checks=checks,
            runtime_s=self.runtime,
            sample=self.reservoir.values,
        )


@contextlib.contextmanager
def tensorflow_tf32(enabled: bool) -> Iterator[None]:
    """Set TensorFlow's TF32 math mode for the duration of the block, then restore it.

    TensorFlow runs float32 convolutions and matmuls in TF32 on Ampere+ GPUs by default, which
    would make the Keras reference (and the SavedModel) a TF32 computation. The setting is
    process-wide; it has no effect on the CPU.
    """
    import tensorflow as tf

    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(enabled)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


def _timed_run(task, runner, inputs) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    return task.run(runner, inputs), time.perf_counter() - start


def run_parity(
    bundle: Bundle | str | os.PathLike,
    cases: Iterable[tuple],
    tolerances: Overrides | None = None,
    formats: Iterable[str] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    *,
    sample_size: int = 20_000,
    seed: int = 0,
    min_foreground_cases: int = 1,
    use_tf32: bool = False,
) -> ParityResult:
    """Compare every artefact of a bundle to its Keras model on validation cases.

    Args:
        bundle: a loaded `Bundle` or its folder (loaded and sha256-verified here).
        cases: `(case_id, image)` or `(case_id, image, truth)` tuples; `image` is a raw (HU)
            `Image`; `truth` is the task's ground truth (classification: the label vector, which
            gives the AUC difference), or None.
        tolerances: one `Tolerances` for all artefacts, or overrides by artefact key or kind
            (see `DEFAULT_TOLERANCES`): a `Tolerances` replaces the default, a dict replaces
            only the fields it names.
        formats: artefact keys to compare; default every artefact except "keras".
        batch_size: slices per runner call.
        progress: show a tqdm progress bar over cases.
        sample_size: (keras, artefact) probability pairs kept per artefact for plots.
        seed: seed of that sample.
        min_foreground_cases: fewest cases whose Keras reference mask must have foreground for
            the task-level check to mean something (Dice agreement of two empty masks is 1.0).
            0 disables this gate; the count is reported either way.
        use_tf32: allow TF32 on Ampere+ GPUs, in TensorFlow (Keras reference, SavedModel) and
            in the ONNX runners' CUDA provider. Off by default: float32 artefacts are compared
            in float32. No effect on the CPU.

    Returns:
        A `ParityResult`; `result.verdict` is "pass" only if enough cases have foreground in
        the Keras reference and every artefact passes every gated criterion
        (`result.messages` says why not).

    Raises:
        ConfigError: if there are no cases, an artefact key is unknown, the bundle has no
            Keras model, or `min_foreground_cases` is not an integer >= 0.
        ParityError: if the Keras reference itself produces NaN or Inf.
    """
    if isinstance(min_foreground_cases, bool) or not (
        isinstance(min_foreground_cases, int) and min_foreground_cases >= 0
    ):
        raise ConfigError(
            "`min_foreground_cases` must be an integer >= 0. "
            f"Received: min_foreground_cases={min_foreground_cases!r}"
        )
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    keys = [k for k in bundle.artefact_keys if k != REFERENCE] if formats is None else list(formats)
    if REFERENCE not in bundle.artefact_keys:
        raise ConfigError(
            f"Parity needs the Keras model (artefact `{REFERENCE}`) in the bundle. "
            f"Received: artefacts={bundle.artefact_keys}"
        )
    entries = {k: bundle.artefact(k) for k in keys}
    resolved = {k: resolve_tolerances(e, tolerances) for k, e in entries.items()}
    task = runtime_task(bundle.task)
    rng = np.random.default_rng(seed)
    stats = {k: _Accumulator(sample_size, rng, task.agreement(bundle)) for k in keys}
    case_ids: list[str] = []
    foreground: list[str] = []
    reference_runtime = 0.0
    with tensorflow_tf32(use_tf32):
        import tensorflow as tf

        reference = bundle.runner(REFERENCE)
        runners = {k: bundle.runner(k, use_tf32=use_tf32) for k in keys}
        # Read inside the block: a TensorFlow runner reports the mode in force when asked.
        providers = {k: r.provider for k, r in runners.items()}
        reference_provider = f"{reference.provider}, {tensorflow_precision(tf)}"
        for case in tqdm(cases, desc="parity", unit="case", disable=not progress):
            case_id, image, truth = str(case[0]), case[1], (case[2] if len(case) > 2 else None)
            inputs = task.inputs(image, bundle, batch_size)
            expected, seconds = _timed_run(task, reference, inputs)
            reference_runtime += seconds
            if not np.all(np.isfinite(expected)):
                raise ParityError(
                    "The Keras reference must produce finite probabilities. Received: case "
                    f"{case_id!r} with {int((~np.isfinite(expected)).sum())} NaN/Inf"
                )
            if task.informative(expected, bundle):
                foreground.append(case_id)
            expected = expected.astype(np.float64)
            for key, runner in runners.items():
                output, seconds = _timed_run(task, runner, inputs)
                stats[key].runtime += seconds
                stats[key].add(case_id, expected, output, truth)
            case_ids.append(case_id)
    if not case_ids:
        raise ConfigError("`cases` must hold at least one (case_id, Image). Received: no cases")
    return ParityResult(
        bundle_path=bundle.path,
        cases=case_ids,
        threshold=bundle.threshold,
        reference_runtime_s=reference_runtime,
        artefacts={k: stats[k].finish(entries[k], resolved[k], providers[k]) for k in keys},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        foreground_cases=foreground,
        min_foreground_cases=min_foreground_cases,
        reference_provider=reference_provider,
        use_tf32=use_tf32,
    )
