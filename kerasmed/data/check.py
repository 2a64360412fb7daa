"""Check a whole dataset before training: read every case and list every problem at once.

`check_dataset(config)` applies the manifest rules (`kerasmed.data.manifest.manifest_problems`:
unknown split, empty or repeated case id, missing or invalid file, an image used by two cases,
unknown label, a patient in two splits), then reads every file of every case with
`serving.io.read_image` and applies these rules, each problem kept as (case, file, reason):

- every file (image, mask, every other `*_path` column) must be readable: a truncated or corrupt
  file, a DICOM without pixel data, a series with a missing slice, NaN or inf voxels, a zero-byte
  PNG are all refused by the reader, whose message names the file;
- a mask, and every other `*_path` file (label maps, e.g. `lung_mask_path`), must be grey and lie
  on its image's grid;
- the images must be grey too, for every task (a classifier's as well as a segmentation's): the
  models take neighbouring slices as channels, so an RGB image (an RGB or colour-palette PNG, an
  RGB DICOM) has no place (the slice cache's rule, which training would otherwise meet first);
- the mask of a `train` case must mark at least one voxel. An all-empty mask is far more often a
  failed export or a wrong label value than a true negative, and training cases are what the
  positive patches are drawn from; `val` and `test` cases may be negative (specificity is
  measured there).

It also warns (`CheckReport.warnings`) when the config's intensity settings do not fit the data
(`kerasmed.data.intensity`): a HU window that clips almost every voxel to one end or that the
data fill a small part of (16-bit microscopy, 8-bit photographs under a CT window), or
`preprocessing.zscore` with a HU window. A warning is printed and written to summary.md, but is
no problem: it fails no case and does not make `check-data` exit 1.

A case with any problem is left out of `CheckReport.good`, which `kerasmed train --skip-bad`
trains on. `CheckReport.write` puts problems.csv, cases.csv (per-case statistics), summary.md
and histogram.png in a folder (default `<data.root>/check/`), each file written atomically. That
folder is the check's own (`check_report_folder`): marked with `.kerasmed`, never the data folder
nor a folder the user made. No TensorFlow is imported.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.config import Config
from kerasmed.data.intensity import config_warnings, window_misfit
from kerasmed.data.manifest import (
    RESERVED_FOLDERS,
    SPLITS,
    Problem,
    check_case_geometry,
    configured_class_names,
    dataset_manifest,
    discover_dataset,
    manifest_problems,
)
from serving.atomic import atomic_dir, atomic_file
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import read_image

HISTOGRAM_SAMPLES = 200_000  # voxels drawn per case for the percentiles and the histogram
_CASE_BINS, _PLOT_BINS = 256, 200
PROBLEM_COLUMNS = ["case_id", "file", "reason"]
REPORT_FILES = ("problems.csv", "cases.csv", "summary.md", "histogram.png")


@dataclass
class CheckReport:
    """What `check_dataset` found.

    Attributes:
        source: the manifest CSV, or the ImageFolder root.
        cases: every row of the dataset (canonical columns of `read_manifest`).
        good: the rows without any problem, index 0..n-1 (what `--skip-bad` trains on).
        problems: one row per problem: `case_id`, `file`, `reason`.
        stats: one row per case whose image was read: `case_id`, `split`, `label`, `size_z`,
            `size_y`, `size_x` (a 2D image has `size_z` 1), `spacing_z/y/x` (mm; NaN for the z
            of a 2D image), `channels`, `min`, `max`, `p1`, `p99` (p1/p99 of the sampled
            voxels), `mask_voxels` and `mask_fraction` (foreground voxels, when a mask was read);
            with `model.intensity: hu_window` (and no `preprocessing.zscore`), `window_below`
            and `window_above`: the fractions of sampled voxels at or beyond each end of
            `model.hu_window`.
        seeded: whether the split was drawn by `data.split` (the manifest has none).
        histograms: per split, `(counts, edges)` of each case's sampled intensities.
        warnings: intensity settings that do not fit the data, one sentence each (no problem:
            they fail no case).
        notes: what the readers assumed (`metadata["notes"]`: a spacing of 0.000\\0.000 read as
            assumed, frames stacked without geometry...), each distinct note once, with the number
            of files it was made for.
    """

    source: Path
    cases: pd.DataFrame
    good: pd.DataFrame
    problems: pd.DataFrame
    stats: pd.DataFrame
    seeded: bool
    histograms: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Rows with at least one problem."""
        return len(self.cases) - len(self.good)

    def lines(self) -> list[str]:
        """One line per problem: `<case>: <file>: <reason>`."""
        return [f"{p.case_id}: {p.file}: {' '.join(str(p.reason).split())}"
                for p in self.problems.itertuples()]

    def warning_lines(self) -> list[str]:
        """One line per warning: `warning: <sentence>`."""
        return [f"warning: {w}" for w in self.warnings]

    def note_lines(self) -> list[str]:
        """One line per distinct reader note: `note (N files): <note>`."""
        return [f"note ({n} file{'s' if n > 1 else ''}): {note}" for note, n in self.notes.items()]

    def summary(self) -> pd.DataFrame:
        """Statistics (rows) per split and for all cases (columns), as text cells."""
        splits = [s for s in SPLITS if (self.cases["split"] == s).any()]
        return pd.DataFrame({name: _split_summary(self, None if name == "all" else name)
                             for name in [*splits, "all"]})

    def to_markdown(self) -> str:
        """summary.md: source, split rule, the summary table, every warning and problem."""
        rule = "seeded (`data.split`)" if self.seeded else "the manifest's split column"
        lines = [
            "# Dataset check", "",
            f"- source: `{self.source}`",
            f"- splits: {rule}",
            f"- cases: {len(self.cases)}, with problems: {self.skipped}, problems: {len(self.problems)}",
            "", _markdown_table(self.summary()), "", "![intensity histogram](histogram.png)", "",
        ]
        if self.warnings:
            lines += [f"## Warnings ({len(self.warnings)})", "", *(f"- {w}" for w in self.warnings),
                      ""]
        if self.notes:
            lines += [f"## What the readers assumed ({len(self.notes)})", "",
                      *(f"- {line}" for line in self.note_lines()), ""]
        lines += [f"## Problems ({len(self.problems)})", ""]
        lines += [f"- {line}" for line in self.lines()] or ["None."]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> Path:
        """Write problems.csv, cases.csv, summary.md and histogram.png into `folder`, marked as a
        check report; returns `folder`. The report is written whole into a temporary sibling and
        renamed into place, so a failed write (a full disk) leaves the earlier report, or none.

        Raises:
            ConfigError: if `folder` is not one a check report may be written to
                (`report_folder_rule`), checked before anything is written.
        """
        from serving.ownership import CHECK_REPORT, write_marker

        folder = Path(folder)
        report_folder_rule(folder, "The check report folder")
        with atomic_dir(folder) as tmp:
            write_marker(tmp, CHECK_REPORT, "kerasmed check-data")
            (tmp / "problems.csv").write_text(self.problems.to_csv(index=False))
            (tmp / "cases.csv").write_text(self.stats.to_csv(index=False, float_format="%.6g"))
            (tmp / "summary.md").write_text(self.to_markdown())
            plot_histograms(self.histograms, tmp / "histogram.png")
        return folder


def report_folder_rule(folder: str | Path, what: str) -> bool:
    """The ownership rule of a check report folder: absent, empty, marked as a check report, or
    a report of a kerasmed version before the marker (nothing but its four files, among them
    problems.csv); never inside a model bundle. True if an earlier report is replaced."""
    from serving.ownership import CHECK_REPORT, check_output_folder, holds_only

    return check_output_folder(folder, what, CHECK_REPORT, flag=None,
                               legacy=holds_only(REPORT_FILES, ("problems.csv",)))


def check_report_folder(folder: str | Path, config: Config,
                        what: str = "`--output` (the report folder)") -> None:
    """Refuse, before the dataset is read, a folder `check-data` must not write its report to.

    The report's `cases.csv` and `summary.md` would overwrite a user's files of those names (a
    manifest is often called `cases.csv`), so the folder may not be the dataset folder
    (`data.root`) nor the one holding its manifest, and must pass `report_folder_rule`.

    Raises:
        ConfigError: naming `what`, the folder and what was expected.
    """
    real = os.path.realpath(folder)
    root = Path(config.data.root)
    homes = {os.path.realpath(root): f"the dataset folder `data.root` ({root})"}
    if config.data.format != "imagefolder" and config.data.manifest:
        manifest = root / config.data.manifest
        homes.setdefault(os.path.realpath(manifest.parent), f"the folder of the data manifest {manifest}")
    if real in homes:
        raise ConfigError(
            f"{what} must be a folder of its own, not {homes[real]}: the report's "
            f"{', '.join(REPORT_FILES)} would overwrite the data's files. Received: {folder}"
        )
    report_folder_rule(folder, what)


def default_check_dir(config: Config) -> Path:
    """`<data.root>/check`: where `kerasmed check-data` and `train --skip-bad` write the report."""
    return Path(config.data.root) / RESERVED_FOLDERS[1]


def check_dataset(config: Config, progress: bool = True) -> CheckReport:
    """Read every case of the config's dataset and collect every problem (see the module doc).

    Args:
        config: the experiment config (`data`, `model.class_names`).
        progress: show a progress bar over cases.

    Returns:
        The report: good cases, problems, per-case statistics, histograms and intensity warnings.

    Raises:
        DataError: only for what prevents any check: a missing data folder or manifest, an
            unreadable CSV, a missing configured column, no case.
    """
    d = config.data
    dataset = discover_dataset(d.root, d.manifest, d, configured_class_names(config))
    cases = dataset.cases
    found = manifest_problems(dataset)
    # Files the manifest rules found missing or invalid (or another case's image) are not read.
    skip = {(p.row, p.file) for p in found}
    m = config.model
    # The raw intensities meet the window only without z-scoring (`config_warnings` covers that).
    window = m.hu_window if m.intensity == "hu_window" and not config.preprocessing.zscore else None
    stats, histograms, notes = [], {}, Counter()
    # Records, not itertuples: a column such as `2d_path` is no identifier and would be renamed.
    for i, row in enumerate(tqdm(cases.to_dict("records"), desc="check", unit="case",
                                 disable=not progress)):
        files = {k: v for k, v in row.items() if k.endswith("_path") and v and (i, v) not in skip}
        problems, stat, hist = _check_case(row, i, files, d.read, window, notes)
        found += problems
        if stat is not None:
            stats.append(stat)
            histograms.setdefault(row["split"], []).append(hist)
    found.sort(key=lambda p: p.row)  # each case's problems together, in manifest order
    # A repeated case id or image marks the later rows: the first keeps its place in `good`.
    good = cases.drop(index=sorted({p.row for p in found}))
    problems = pd.DataFrame([(p.case_id, p.file, p.reason) for p in found], columns=PROBLEM_COLUMNS)
    stats = pd.DataFrame(stats)
    return CheckReport(dataset.source, cases, good.reset_index(drop=True), problems, stats,
                       dataset.seeded, histograms, intensity_warnings(config, stats), dict(notes))


def intensity_warnings(config: Config, stats: pd.DataFrame) -> list[str]:
    """Where the config's intensity settings do not fit each other or the data.

    Args:
        config: the experiment config (`model.intensity`, `model.hu_window`,
            `preprocessing.zscore`).
        stats: `CheckReport.stats`; its `window_below` / `window_above` columns (mean over the
            cases) and `p1` / `p99` (median over the cases) are set against `model.hu_window`.

    Returns:
        One sentence per warning (`kerasmed.data.intensity.config_warnings`, then the window's
        fit to the data, `window_misfit`).
    """
    warnings = config_warnings(config)
    if stats.empty or "window_below" not in stats or stats["window_below"].isna().all():
        return warnings
    misfit = window_misfit(config.model.hu_window, float(stats["window_below"].mean()),
                           float(stats["window_above"].mean()), float(stats["p1"].median()),
                           float(stats["p99"].median()))
    if misfit is not None:
        warnings.append(
            f"{misfit}. `model.intensity: hu_window` suits CT in HU; for other data use "
            "`preprocessing.zscore: true` with `model.intensity: none`, or a `model.hu_window` "
            "that spans the data's intensities"
        )
    return warnings


def _check_case(row: dict, i: int, files: dict[str, str], options: dict,
                window=None, notes: Counter | None = None) -> tuple:
    """Problems, statistics and intensity histogram of the case in row `i`, reading `files` with
    the reader `options` (`data.read`); `window`: the HU window to count clipped voxels of;
    `notes` counts the readers' notes (what they assumed) per file."""
    case_id, problems = row["case_id"], []

    def problem(file: str, reason: str) -> None:
        problems.append(Problem(case_id, file, reason, i))

    def read(path: str) -> Image | None:
        try:
            image = read_image(path, options=options)
        except DataError as err:  # the reader names the file and the reason
            problem(path, str(err))
            return None
        if notes is not None:
            notes.update(image.metadata.get("notes") or [])
        return image

    def grey(image: Image, what: str, path: str) -> bool:
        try:
            image.require_grey(f"{what} of case {case_id} (`{path}`)")
        except DataError as err:
            problem(path, str(err))
            return False
        return True

    image = read(files["image_path"]) if "image_path" in files else None
    others = {k: read(p) for k, p in files.items() if k != "image_path"}
    if image is not None:  # every task's cache needs one value per voxel
        grey(image, "Image", files["image_path"])
    for column, other in others.items():
        what = "Mask" if column == "mask_path" else f"`{column}`"
        if other is None or not grey(other, what, files[column]) or image is None:
            continue
        try:
            check_case_geometry(image, other, case_id, files[column], what=what)
        except DataError as err:
            problem(files[column], str(err))
    mask = others.get("mask_path")
    if mask is not None and row["split"] == "train" and not np.any(mask.array):
        problem(files["mask_path"], f"The mask of a `train` case must mark at least one voxel (a "
                f"blank mask is most often a failed export). Received: an all-zero mask of shape "
                f"{mask.shape}")
    if image is None:
        return problems, None, None
    stat, hist = _statistics(image, i, window)
    stat = {"case_id": case_id, "split": row["split"], "label": row.get("label"), **stat}
    if mask is not None and mask.channels == 1:
        stat["mask_voxels"] = int(np.count_nonzero(mask.array))
        stat["mask_fraction"] = stat["mask_voxels"] / mask.array.size
    return problems, stat, hist


def _statistics(image: Image, index: int, window=None) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    flat = image.array.reshape(-1)
    # With replacement: drawing without it permutes the whole volume (seconds for a CT).
    rng = np.random.default_rng(index)
    sample = flat[rng.integers(0, flat.size, min(flat.size, HISTOGRAM_SAMPLES))].astype(np.float64)
    lo, hi = float(flat.min()), float(flat.max())
    counts, edges = np.histogram(sample, _CASE_BINS, (lo, hi if hi > lo else lo + 1.0))
    size = (1, *image.shape) if image.ndim == 2 else image.shape
    spacing = (np.nan, *image.spacing) if image.ndim == 2 else image.spacing
    stat = {**{f"size_{a}": int(n) for a, n in zip("zyx", size)},
            **{f"spacing_{a}": float(s) for a, s in zip("zyx", spacing)},
            "channels": image.channels, "min": lo, "max": hi,
            "p1": float(np.percentile(sample, 1)), "p99": float(np.percentile(sample, 99))}
    if window is not None:
        stat["window_below"] = float((sample <= window[0]).mean())
        stat["window_above"] = float((sample >= window[1]).mean())
    return stat, (counts, edges)


def _range(values: pd.Series, fmt: str) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.median():{fmt}} [{values.min():{fmt}}, {values.max():{fmt}}]"


def _split_summary(report: CheckReport, split: str | None) -> dict[str, str]:
    cases = report.cases if split is None else report.cases[report.cases["split"] == split]
    good = report.good if split is None else report.good[report.good["split"] == split]
    s = report.stats
    if split is not None and not s.empty:
        s = s[s["split"] == split]
    out = {"cases": str(len(cases)), "good": str(len(good)),
           "with problems": str(len(cases) - len(good))}
    if s.empty:
        return out
    for a in "zyx":
        out[f"size {a} (median [min, max])"] = _range(s[f"size_{a}"], ".0f")
    for a in "zyx":
        out[f"spacing {a} mm"] = _range(s[f"spacing_{a}"], ".3g")
    out["intensity min / max"] = f"{s['min'].min():.4g} / {s['max'].max():.4g}"
    out["intensity p1 / p99 (median)"] = f"{s['p1'].median():.4g} / {s['p99'].median():.4g}"
    if "mask_fraction" in s and s["mask_fraction"].notna().any():
        fractions = s["mask_fraction"].dropna()
        out["mask foreground % (mean)"] = f"{100 * fractions.mean():.3g}"
        out["empty masks"] = str(int((fractions == 0).sum()))
    if "label" in cases:
        counts = cases["label"].value_counts(sort=False)
        out["labels"] = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return out


def _markdown_table(df: pd.DataFrame) -> str:
    header = ["", *map(str, df.columns)]
    rows = [[str(i), *map(str, r)] for i, r in zip(df.index, df.itertuples(index=False))]
    line = lambda cells: "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"  # noqa: E731
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def plot_histograms(histograms: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    """One intensity histogram per split (fraction of sampled voxels, log scale), merged from
    each case's own bins onto common ones, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    pairs = [h for hs in histograms.values() for h in hs]
    if pairs:
        lo, hi = min(e[0] for _, e in pairs), max(e[-1] for _, e in pairs)
        edges = np.linspace(lo, hi, _PLOT_BINS + 1)
        for split in [s for s in SPLITS if s in histograms]:
            total = np.zeros(_PLOT_BINS)
            for counts, case_edges in histograms[split]:
                centres = (case_edges[:-1] + case_edges[1:]) / 2
                total += np.histogram(centres, edges, weights=counts)[0]
            ax.stairs(total / max(total.sum(), 1), edges,
                      label=f"{split} ({len(histograms[split])} cases)")
        ax.set_yscale("log")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no readable image", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("intensity (HU for CT)")
    ax.set_ylabel("fraction of sampled voxels")
    ax.set_title("Intensities per split")
    ax.grid(alpha=0.3)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def training_cases(config: Config, skip_bad: bool = False, progress: bool = True,
                   write_report: bool = True) -> pd.DataFrame:
    """The cases a run trains on.

    Without `skip_bad`, the dataset as `read_manifest` reads it (its first problem is an error;
    an unreadable file fails later, in the cache). With it, `check_dataset` runs first, its report
    goes to `default_check_dir` (when `write_report`), "skipped N of M cases (see ...)" is
    printed, and the good cases are returned.

    Args:
        config: the experiment config.
        skip_bad: drop the cases with a problem instead of failing on the first.
        progress: show the check's progress bar.
        write_report: write the check report and print the skipped count (the chief worker).

    Raises:
        DataError: if the dataset lacks a column the task needs (`TrainingTask.required_columns`,
            e.g. masks for segmentation, which an ImageFolder tree has not), has no `train` or
            no `val` case (with `skip_bad`: none is left), or its cases break the task's rule
            (`TrainingTask.check_cases`, e.g. a classifier's split with a single class).
    """
    from kerasmed.tasks import training_task

    d = config.data
    # First: no check or file read helps a dataset without the task's targets. (An empty mask
    # cell is a problem of its case, which `skip_bad` skips.)
    columns = list(discover_dataset(d.root, d.manifest, d).cases.columns)
    task = training_task(config.task)
    for column, why in task.required_columns(config).items():
        if column not in columns:
            raise DataError(f"{why}. Received: data.format={d.format}, columns={columns}")
    if not skip_bad:
        cases = dataset_manifest(config)
        _check_splits(cases, "the dataset lacks one", config)
        task.check_cases(config, cases)
        return cases
    if write_report:  # before every file is read
        check_report_folder(default_check_dir(config), config, "The check report folder (<data.root>/check)")
    report = check_dataset(config, progress)
    if write_report:
        folder = report.write(default_check_dir(config))
        print(f"skipped {report.skipped} of {len(report.cases)} cases (see {folder / 'problems.csv'})",
              flush=True)
    _check_splits(report.good, f"`--skip-bad` left too few: {report.skipped} of "
                  f"{len(report.cases)} cases have problems (see "
                  f"{default_check_dir(config) / 'problems.csv'})", config, "good cases")
    task.check_cases(config, report.good)
    return report.good


def _check_splits(cases: pd.DataFrame, context: str, config: Config, what: str = "cases") -> None:
    """Refuse cases without a `train` or a `val` case (training validates every epoch)."""
    left = {str(k): int(v) for k, v in cases["split"].value_counts().items()}
    if left.get("train") and left.get("val"):
        return
    raise DataError(
        f"Training needs `train` and `val` cases (it validates every epoch), and {context}: "
        f"assign cases to both (the manifest's `split` column, or `data.split.fractions` without "
        f"one). Received: {what} per split {left}"
    )
