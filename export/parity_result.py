"""What parity found: per-artefact errors and agreement (`ArtefactParity`) and the whole bundle's verdict
(`ParityResult`). `export.parity.run_parity` builds them; the task-level figures come from the
bundle's task (`serving.tasks`, `RuntimeTask.agreement`).

Case ids stay in memory (`ParityResult.cases`): a manifest's case id may be a patient ID, and the
report is written inside the bundle that ships to devices, so `to_dict()` names cases by position
(`#0`, `#1`...) and `to_dict(local=True)` keeps the ids for reports that stay on this machine.

`check_report_folder` says where a report may go; it imports no TensorFlow, so `kerasmed compare`
checks its `--output` before any heavy import.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from export.tolerances import Tolerances
from serving.bundle import REPORT_DIRS

REFERENCE = "keras"
REPORT_DIR, NARROWER_REPORT_DIR = REPORT_DIRS  # a full check's report, a narrower check's
REPORT_FILES = JSON_NAME, MD_NAME, PNG_NAME = ("parity.json", "parity.md", "parity.png")
# Key of the result-level criteria (about the golden cases, not one artefact) in `failures`.
GOLDEN_CASES = "golden_cases"
VACUOUS_MESSAGE = (
    "no golden case has foreground in the Keras reference; the task-level check would be vacuous"
)


def check_report_folder(out_dir: str | os.PathLike, bundle_dir: str | os.PathLike,
                        what: str = "`out_dir` (the report folder)") -> bool:
    """Refuse a parity report folder that is not `compare`'s own, before any work.

    It may be absent, empty, marked as a parity report (`.kerasmed`), or a report of a kerasmed
    version before the marker (nothing but `parity.json`, `parity.md`, `parity.png`). Inside a
    bundle only `bundle_dir`'s own `parity/` and `parity_narrower/` are allowed: a report in
    another folder of a bundle (e.g. `BUNDLE/saved_model`) would break its sha256 check.

    Returns:
        True if an earlier report will be replaced.

    Raises:
        ConfigError: naming `what`, the folder and what was expected.
    """
    from serving.ownership import PARITY_REPORT, check_output_folder, holds_only

    bundle_dir = Path(bundle_dir)
    return check_output_folder(
        out_dir, what, PARITY_REPORT, flag=None, legacy=holds_only(REPORT_FILES, (JSON_NAME,)),
        bundle_reports=(bundle_dir / REPORT_DIR, bundle_dir / NARROWER_REPORT_DIR))


@dataclasses.dataclass
class ArtefactParity:
    """Parity of one artefact against Keras, over all cases.

    `sample` is `(n, 2)` float32: a uniform reservoir sample of (keras prob, artefact prob) pairs
    over every output element of every case, for plotting. `checks` maps each gated criterion
    ("finite", "shape", "max_abs", and the task's, e.g. "dice_agreement", "identical_masks" for
    segmentation, "label_agreement" for classification) to pass/fail.

    `min_passing_max_abs` is the smallest `max_abs` tolerance that would pass, i.e. the observed
    max abs error (as Polygraphy reports it), independent of the tolerance used; None when no
    tolerance would pass (NaN/Inf outputs or a shape mismatch). `provider` names the runtime and
    its precision mode (`Runner.provider`). `agreement` (the task's per-case figure: Dice of the
    masks, 1/0 for equal labels) and `shape_mismatches` are keyed by case id; `task_summary` holds
    the task's figures over all cases (e.g. `mean_dice_agreement`), `task_columns` their report
    cells and `task_messages` the sentence of each failed task check.
    """

    key: str
    format: str
    precision: str
    file: str
    sha256: str
    kind: str
    provider: str
    tolerances: Tolerances
    max_abs_error: float
    mean_abs_error: float
    min_passing_max_abs: float | None
    nan_count: int
    inf_count: int
    agreement: dict[str, float]
    task_summary: dict[str, Any]
    task_columns: dict[str, str]
    task_messages: dict[str, str]
    shape_mismatches: dict[str, str]
    checks: dict[str, bool]
    runtime_s: float
    sample: np.ndarray

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]

    @property
    def messages(self) -> list[str]:
        """One sentence per failed check, with the measured value and the tolerance."""
        return self.describe()

    def describe(self, labels: Mapping[str, str] | None = None) -> list[str]:
        """`messages`, naming cases by `labels[case_id]` when given (see `ParityResult.to_dict`)."""
        labels = labels or {}
        t, out = self.tolerances, []
        for name in self.failed_checks:
            if name == "finite":
                detail = f"{self.nan_count} NaN and {self.inf_count} Inf in the probabilities"
            elif name == "shape":
                shapes = "; ".join(
                    f"{labels.get(case, case)}: {shape}" for case, shape in self.shape_mismatches.items()
                )
                detail = f"output shape differs from Keras ({shapes})"
            elif name == "max_abs":
                detail = f"max abs error {self.max_abs_error:.3g} > tolerance {t.max_abs:g}"
            else:
                detail = self.task_messages[name]
            out.append(f"{self.key}: {detail}")
        return out

    def to_dict(self, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """JSON-ready fields, without `sample`; cases named by `labels[case_id]` when given."""
        labels = labels or {}
        skip = ("sample", "task_columns", "task_messages")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        d.update(tolerances=self.tolerances.to_dict(), passed=self.passed)
        d["agreement"] = {labels.get(c, c): v for c, v in self.agreement.items()}
        d.update(self.task_summary)  # top-level keys of the report, e.g. `mean_dice_agreement`
        d["shape_mismatches"] = {labels.get(c, c): v for c, v in self.shape_mismatches.items()}
        return {**d, "failed_checks": self.failed_checks, "messages": self.describe(labels)}


@dataclasses.dataclass
class ParityResult:
    """Parity of every compared artefact of one bundle, plus what was used to judge it.

    `foreground_cases` lists the golden cases whose Keras reference mask has foreground; the
    result fails when there are fewer than `min_foreground_cases`, because Dice agreement on
    empty masks is 1.0 whatever the artefact does.
    """

    bundle_path: Path
    cases: list[str]
    threshold: float
    reference_runtime_s: float
    artefacts: dict[str, ArtefactParity]
    reference: str = REFERENCE
    created: str = ""
    foreground_cases: list[str] = dataclasses.field(default_factory=list)
    min_foreground_cases: int = 1
    reference_provider: str = ""
    use_tf32: bool = False
    # What a full check would cover, set by `export.run_export.compare_bundle`: `split`,
    # `split_cases` (cases in the split) and `bundle_artefacts` (every artefact but the reference).
    scope: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def narrower(self) -> list[str]:
        """How this check is narrower than a full one (empty when full or when `scope` is unset),
        e.g. `["1 of 3 artefacts", "2 of 10 val cases"]`."""
        out = []
        every = self.scope.get("bundle_artefacts")
        if every is not None and set(every) - set(self.artefacts):
            out.append(f"{len(self.artefacts)} of {len(every)} artefacts")
        total = self.scope.get("split_cases")
        if total is not None and len(self.cases) < total:
            split = self.scope.get("split")
            out.append(f"{len(self.cases)} of {total} {split + ' ' if split else ''}cases")
        return out

    @property
    def checks(self) -> dict[str, bool]:
        """Criteria on the golden cases themselves: "foreground_cases"."""
        return {"foreground_cases": len(self.foreground_cases) >= self.min_foreground_cases}

    @property
    def passed(self) -> bool:
        return all(self.checks.values()) and all(a.passed for a in self.artefacts.values())

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def failures(self) -> dict[str, list[str]]:
        """Failed criteria per failing artefact, e.g. `{"onnx": ["max_abs"]}`, and under
        `"golden_cases"` the failed criteria of the cases (`["foreground_cases"]`)."""
        failed = [name for name, ok in self.checks.items() if not ok]
        out = {GOLDEN_CASES: failed} if failed else {}
        out.update({k: a.failed_checks for k, a in self.artefacts.items() if not a.passed})
        return out

    @property
    def messages(self) -> list[str]:
        """Why the verdict is "fail", one sentence per failed criterion (empty on a pass)."""
        return self.describe()

    def case_labels(self) -> dict[str, str]:
        """Case id -> `#i`, its position (from 0) in `cases`: how files name cases."""
        return {case: f"#{i}" for i, case in enumerate(self.cases)}

    def describe(self, labels: Mapping[str, str] | None = None) -> list[str]:
        """`messages`, naming cases by `labels[case_id]` when given."""
        out = []
        if not self.checks["foreground_cases"]:
            found, n, need = len(self.foreground_cases), len(self.cases), self.min_foreground_cases
            if found == 0:
                out.append(f"{VACUOUS_MESSAGE} (0 of {n} cases; at least {need} required)")
            else:
                out.append(
                    f"only {found} of {n} golden cases have foreground in the Keras reference "
                    f"(at least {need} required); the task-level check would be too weak"
                )
        for a in self.artefacts.values():
            out.extend(a.describe(labels))
        return out

    @property
    def tolerances(self) -> dict[str, dict[str, Any]]:
        return {k: a.tolerances.to_dict() for k, a in self.artefacts.items()}

    def to_dict(self, local: bool = False) -> dict[str, Any]:
        """JSON-ready result, as written into the bundle (`parity/parity.json`).

        Args:
            local: keep case ids and the bundle's full path, for a report that stays on this
                machine. By default cases are named by position (`case_labels`: `#0`, `#1`...)
                and the bundle by its folder name, so nothing identifying or local ships with it.
        """
        labels = None if local else self.case_labels()
        name = (lambda case: case) if local else labels.__getitem__
        return {
            "verdict": self.verdict,
            "bundle": str(self.bundle_path) if local else Path(self.bundle_path).name,
            "reference": self.reference,
            "reference_provider": self.reference_provider,
            "use_tf32": self.use_tf32,
            "cases": [name(c) for c in self.cases],
            "case_naming": "case id" if local else "position in the order parity read the cases",
            "foreground_cases": [name(c) for c in self.foreground_cases],
            "foreground_case_count": len(self.foreground_cases),
            "min_foreground_cases": self.min_foreground_cases,
            "threshold": self.threshold,
            "reference_runtime_s": self.reference_runtime_s,
            "created": self.created,
            "checks": self.checks,
            "failures": self.failures,
            "messages": self.describe(labels),
            "artefacts": {k: a.to_dict(labels) for k, a in self.artefacts.items()},
            "scope": self.scope,
            "narrower": self.narrower,
        }
