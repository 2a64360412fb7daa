"""Write a parity report (JSON, Markdown, PNG) and record the verdict in the bundle manifest.

Every file is written under a temporary name and renamed into place (`serving.atomic`), so a
report folder never holds a half-written file. The report usually lives inside the bundle, which
ships to devices: it names cases by position (`#0`, `#1`..., see `ParityResult.to_dict`), never by
case id (which may be a patient ID), and the bundle by its folder name, never by a local path.
The manifest update changes only its `parity` entry: artefact entries and their sha256 are never
touched, and the verdict is refused if the bundle's artefacts are not the ones parity ran on, or
if the manifest was edited by hand since kerasmed wrote it (`manifest_sha256`). The report folder
must be `compare`'s own (`export.parity_result.check_report_folder`) and gets a `.kerasmed`
marker; `parity.json` is strict JSON (a NaN figure is written as null).

Example:
    >>> result = run_parity(bundle, cases)
    >>> write_parity_report(result)          # bundle/parity/parity.{json,md,png}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from export.bundle_writer import refuse_absolute_paths
from export.parity import ParityResult
from export.parity_result import JSON_NAME, MD_NAME, PNG_NAME, REPORT_DIR, check_report_folder
from serving.atomic import atomic_file, atomic_write_text
from serving.bundle import (
    MANIFEST_NAME,
    Bundle,
    check_manifest_digest,
    finite_json,
    validate_manifest,
    verify_artefacts,
    write_manifest,
)
from serving.errors import BundleError
from serving.ownership import PARITY_REPORT, write_marker

# Abs errors of exactly 0 are drawn at this floor on the log axis.
_ERROR_FLOOR = 1e-12


def _json_default(value: Any):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: float | None, spec: str = ".2e") -> str:
    if value is None:
        return "not gated"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, spec)


def _rows(result: ParityResult) -> tuple[list[str], list[list[str]]]:
    # The task's own columns (`Agreement.columns`) sit between the errors and the runtime.
    task_headers = list(next(iter(result.artefacts.values())).task_columns) if result.artefacts else []
    header = [
        "artefact", "kind", "provider", "max abs", "max abs tol.", "min passing tol.", "mean abs",
        "NaN/Inf", *task_headers, "runtime (s)", "x Keras", "failed", "verdict",
    ]
    ref = result.reference_runtime_s
    rows = []
    for a in result.artefacts.values():
        t = a.tolerances
        rows.append([
            a.key, a.kind, a.provider, _fmt(a.max_abs_error), _fmt(t.max_abs, "g"),
            _fmt(a.min_passing_max_abs) if a.min_passing_max_abs is not None else "none",
            _fmt(a.mean_abs_error), f"{a.nan_count}/{a.inf_count}",
            *(a.task_columns.get(h, "-") for h in task_headers),
            f"{a.runtime_s:.3f}", f"{a.runtime_s / ref:.2f}" if ref > 0 else "n/a",
            ", ".join(a.failed_checks) or "-", "pass" if a.passed else "FAIL",
        ])
    return header, rows


def foreground_line(result: ParityResult) -> str:
    """How many golden cases have foreground in the Keras reference, against the minimum."""
    return (
        f"golden cases with foreground in the Keras reference: {len(result.foreground_cases)} of "
        f"{len(result.cases)} (at least {result.min_foreground_cases} required)"
    )


def format_table(result: ParityResult, markdown: bool = False) -> str:
    """One row per artefact: provider and precision, errors, Dice agreement, the tolerances used,
    runtime, verdict.

    Args:
        result: from `run_parity`.
        markdown: a Markdown table instead of aligned plain text. The plain text (for terminals)
            is followed by the golden-case foreground count and, on a fail, one line per reason.
    """
    header, rows = _rows(result)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.append(foreground_line(result))
    lines.extend(f"FAIL: {m}" for m in result.messages)
    return "\n".join(lines)


def render_markdown(result: ParityResult) -> str:
    """The Markdown report: verdict, results table with the tolerances used, notes."""
    labels = result.case_labels()
    lines = [
        f"# Parity report: {result.verdict.upper()}",
        "",
        f"- bundle: `{Path(result.bundle_path).name}`",
        f"- reference: {result.reference} ({len(result.cases)} cases, mask threshold "
        f"{result.threshold}), run by {result.reference_provider or 'unknown provider'}",
        f"- cases are named #0 to #{len(result.cases) - 1} in the order parity read them (for "
        "`kerasmed compare`, the split's rows in manifest order); case ids are not recorded",
        f"- {foreground_line(result)}",
        f"- TF32 on GPUs: {'allowed' if result.use_tf32 else 'off'}",
        f"- date: {result.created}",
        *([f"- scope: narrower than a full check ({', '.join(result.narrower)}); the bundle's "
           "recorded certificate was left unchanged"] if result.narrower else []),
        "",
        *(
            ["## Why it fails", "", *(f"- {m}" for m in result.describe(labels)), ""]
            if result.messages else []
        ),
        "## Results and tolerances used",
        "",
        format_table(result, markdown=True),
        "",
        "A tolerance of \"not gated\" is reported but not checked. Identical masks are required "
        "where marked \"(required)\". \"min passing tol.\" is the smallest max-abs tolerance that "
        "would pass, i.e. the observed max abs error (\"none\" when NaN/Inf or a shape mismatch "
        "fail whatever the tolerance). The provider column names each runtime and its float "
        "precision mode. Dice agreement of two empty masks is 1.0, so the verdict also needs "
        "golden cases with foreground in the Keras reference.",
        "",
        f"Keras reference runtime: {result.reference_runtime_s:.3f} s over all cases. Runtimes "
        "are for information only: one pass over these cases, not a benchmark.",
        "",
        f"![parity plots]({PNG_NAME})",
        "",
    ]
    return "\n".join(lines)


def render_figure(result: ParityResult) -> Figure:
    """Per artefact: artefact vs Keras probability (scatter) and abs error histogram (log-log)."""
    rows = max(len(result.artefacts), 1)
    fig = Figure(figsize=(10, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for (ax_s, ax_h), a in zip(axes, result.artefacts.values(), strict=False):
        ref, got = a.sample[:, 0], a.sample[:, 1]
        ax_s.scatter(ref, got, s=2, alpha=0.4, rasterized=True)
        ax_s.plot([0, 1], [0, 1], color="black", linewidth=0.8)
        ax_s.set(
            xlabel="Keras probability",
            ylabel=f"{a.key} probability",
            title=f"{a.key}: {'pass' if a.passed else 'FAIL'} (n={len(ref)} sampled)",
        )
        err = np.abs(got.astype(np.float64) - ref)
        err = np.maximum(err[np.isfinite(err)], _ERROR_FLOOR)
        if err.size:
            top = math.log10(max(err.max(), 1e-6)) + 0.1
            bins = np.logspace(math.log10(_ERROR_FLOOR), top, 60)
            ax_h.hist(err, bins=bins)
        ax_h.set_xscale("log")
        ax_h.set_yscale("log")  # single outliers stay visible next to thousands of exact matches
        if a.tolerances.max_abs is not None:
            ax_h.axvline(a.tolerances.max_abs, color="red", linestyle="--", label="max abs tol.")
            ax_h.legend(loc="upper left")
        ax_h.set(
            xlabel=f"|{a.key} - Keras| (0 drawn at {_ERROR_FLOOR:g})",
            ylabel="count",
            title=f"abs error, max {_fmt(a.max_abs_error)}",
        )
    return fig


def _sealed_manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest, checked against the schema and its own `manifest_sha256`, so that
    a verdict is never recorded over a hand edit."""
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = validate_manifest(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(
            f"{MANIFEST_NAME} must be readable JSON. Received: {str(manifest_path)!r}: {err}"
        ) from err
    check_manifest_digest(manifest, manifest_path)
    return manifest


def record_verdict(bundle_path: str | os.PathLike, result: ParityResult, report: Path) -> None:
    """Set the manifest's `parity` entry, leaving every other entry as it was.

    Raises:
        BundleError: if the manifest was edited since kerasmed wrote it, or the bundle's
            artefacts fail verification or differ from those parity ran on (their sha256).
    """
    root = Path(bundle_path)
    manifest = _sealed_manifest(root)
    verify_artefacts(root, manifest["artefacts"])
    recorded = {a.get("key", a["format"]): a["sha256"] for a in manifest["artefacts"]}
    for key, a in result.artefacts.items():
        if recorded.get(key) != a.sha256:
            raise BundleError(
                f"Parity verdicts may only be recorded for the artefacts parity ran on; artefact "
                f"`{key}` changed since. Received: manifest sha256={recorded.get(key)}, "
                f"parity sha256={a.sha256}"
            )
    try:
        report_ref = report.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # a report outside the bundle does not ship with it; no local path either
        report_ref = None
    manifest["parity"] = {
        "verdict": result.verdict,
        "report": report_ref,
        "tolerances": result.tolerances,
        "failures": result.failures,
        "messages": result.describe(result.case_labels()),
        "cases": len(result.cases),
        "foreground_cases": len(result.foreground_cases),
        "min_foreground_cases": result.min_foreground_cases,
        "providers": {k: a.provider for k, a in result.artefacts.items()},
        "scope": {"artefacts": sorted(result.artefacts), **result.scope},
        "date": result.created,
    }
    # Only the entry written here: a bundle exported before the rule may record its data's
    # absolute path, and still gets its verdict.
    refuse_absolute_paths({"parity": manifest["parity"]}, MANIFEST_NAME)
    write_manifest(root, manifest)


def write_parity_report(
    result: ParityResult,
    out_dir: str | os.PathLike | None = None,
    bundle: Bundle | str | os.PathLike | None = None,
    *,
    update_manifest: bool = True,
) -> Path:
    """Write `parity.json`, `parity.md` and `parity.png`, then record the verdict in the bundle.

    Args:
        result: from `export.parity.run_parity`.
        out_dir: report folder; default `<bundle>/parity`.
        bundle: the bundle whose manifest records the verdict (a `Bundle` or its folder);
            default `result.bundle_path`.
        update_manifest: set the bundle manifest's `parity` entry (verdict, report file,
            tolerances, date).

    Returns:
        The report folder.

    Raises:
        ConfigError: if `out_dir` is not a report folder `compare` may write
            (`export.parity_result.check_report_folder`), checked before anything is written.
        BundleError: if the manifest cannot be updated (see `record_verdict`); a manifest
            edited by hand is refused before any report file is written.
    """
    root = Path(result.bundle_path if bundle is None else getattr(bundle, "path", bundle))
    out = Path(out_dir) if out_dir is not None else root / REPORT_DIR
    check_report_folder(out, root)
    if update_manifest:  # a hand-edited manifest gets no report either
        _sealed_manifest(root)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, PARITY_REPORT, "kerasmed compare")
    payload = json.dumps(finite_json(result.to_dict()), indent=2, default=_json_default,
                         allow_nan=False) + "\n"
    atomic_write_text(out / JSON_NAME, payload)
    atomic_write_text(out / MD_NAME, render_markdown(result))
    with atomic_file(out / PNG_NAME) as png:
        render_figure(result).savefig(png, dpi=100)
    if update_manifest:
        record_verdict(root, result, out / JSON_NAME)
    return out
