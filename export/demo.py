"""The main job: generate -> train -> evaluate -> export -> compare -> one summary table.

Everything goes under one work folder:
    <workdir>/data/            synthetic DICOM series, NIfTI masks, manifest.csv, nodules.csv
    <workdir>/runs/<name>/     training run (checkpoints, logs, TensorBoard, eval/, bundle/)
    <workdir>/report/          summary.md, summary.json and the plots worth looking at

Each of these folders carries a `.kerasmed` marker (`serving.ownership`), so a rerun replaces
what an earlier demo made; a folder the demo did not make (e.g. a `data/` holding the user's
files, or a run trained with `kerasmed train`) is refused unless `--overwrite` is passed. Every
check (config, work folder, the three folders) runs before anything is written or deleted.

`prepare_demo` (the checks) imports no TensorFlow, so the CLI can run it before importing it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kerasmed.bench.machine import cpu_info, describe_cpu
from kerasmed.config import Config, load_config
from kerasmed.data.generate import dataset_params, is_complete_dataset
from serving.atomic import atomic_dir
from serving.errors import ConfigError
from serving.ownership import (
    DATASET,
    REPORT,
    RUN,
    check_output_folder,
    check_writable_folder,
    read_marker,
    user_entries,
    write_marker,
)

# Profiles are config overrides. "fast" (4400 steps, a fixed budget so the result does not depend
# on machine speed) fits the README's promise on a 2-core CPU, an AVX2-only one included. It runs
# 22 epochs of 200 steps: validation (64 whole slices) and the epoch's checkpoints cost about
# 2.7 s per epoch on a Zen 3, so 22 x 200 steps take the time 36 x 100 did. Seeds 0, 1, 2 gave
# Dice 0.791, 0.724, 0.756 at 36 x 100 and 0.777, 0.823, 0.747 at 22 x 200; "tiny" is the
# end-to-end smoke test; "full" trains the config as written.
PROFILES: dict[str, list[str]] = {
    "full": [],
    "fast": ["training.epochs=22", "training.steps_per_epoch=200", "training.mixed_precision=auto"],
    "tiny": [
        "synthetic.num_cases=4", "synthetic.shape=[12,96,96]", "synthetic.split_fractions=[0.5,0.5,0.0]",
        "preprocessing.size=[null,96,96]", "sampling.patch_size=[48,48]", "sampling.batch_size=4",
        "sampling.positive_fraction=0.5", "model.filters=4", "model.depth=2", "training.epochs=2",
        "training.steps_per_epoch=3",
        "training.max_val_slices=8", "training.mixed_precision=auto",
    ],
}
DEMO = "kerasmed demo"  # `created_by` of the folders the demo makes
OVERWRITE_FLAG = "`kerasmed demo --overwrite` (Python: `run_demo(..., overwrite=True)`)"
REPORT_FILES = ("eval/training_curves.png", "eval/dice_per_case.png", "eval/overlay_montage.png",
                "eval/metrics.csv", "bundle/parity/parity.png", "bundle/parity/parity.md")


def _step(name: str, t0: float) -> None:
    print(f"[demo] {name} ({time.monotonic() - t0:.0f} s)", flush=True)


@dataclass(frozen=True)
class DemoPlan:
    """What `prepare_demo` checked: the demo's config and which folders it will replace."""

    config: Config
    replace_data: bool  # data/ holds another dataset the demo may replace
    replace_run: bool  # runs/<name>/ holds a run the demo may train again from scratch


def _made_by_demo(marker: dict) -> bool:
    return marker.get("created_by") == DEMO


def prepare_demo(workdir: str | Path, config_path: str | Path, profile: str = "fast",
                 overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False) -> DemoPlan:
    """Check everything the demo needs before it writes or deletes anything (no TensorFlow).

    Args:
        workdir: the demo's work folder (created if absent).
        config_path: experiment config.
        profile: a key of `PROFILES`.
        overrides: ``KEY=VALUE`` applied after the profile's.
        overwrite: replace `data/`, `runs/<name>/` and `report/` even when the demo did not make them.

    Returns:
        The validated config and the folders the demo will replace.

    Raises:
        ConfigError: if the profile or config is invalid, `workdir` is a file or not writable, or
            one of its folders holds something the demo did not make and `overwrite` is False.
    """
    workdir = Path(workdir)
    if profile not in PROFILES:
        raise ConfigError(f"`profile` must be one of {sorted(PROFILES)}. Received: {profile!r}")
    check_writable_folder(workdir, "`--workdir`")
    config = load_config(config_path, PROFILES[profile] + list(overrides) + [
        f"data.root={workdir / 'data'}", f"output_dir={workdir / 'runs'}", "data.cache_dir=null",
    ])
    s = config.synthetic
    params = dataset_params(s.num_cases, s.seed, s.split_fractions, s.shape)
    data = Path(config.data.root)
    # A finished dataset with the demo's parameters is reused as it is, whoever made it.
    replace_data = not is_complete_dataset(data, params) and check_output_folder(
        data, "The demo's data folder", DATASET, OVERWRITE_FLAG, overwrite)
    replace_run = check_output_folder(
        config.run_dir(), "The demo's run folder", RUN, OVERWRITE_FLAG, overwrite, owned=_made_by_demo,
        rule="absent, empty or a training run folder that `kerasmed demo` made")
    check_output_folder(workdir / "report", "The demo's report folder", REPORT, OVERWRITE_FLAG,
                        overwrite, owned=_made_by_demo)
    return DemoPlan(config, replace_data, replace_run)


def run_demo(workdir: str | Path, config_path: str | Path, profile: str = "fast",
             progress: bool = True, overrides: list[str] | tuple[str, ...] = (),
             overwrite: bool = False) -> int:
    """Run the whole chain; returns the exit code (1 if a parity tolerance failed).

    `overrides` (``KEY=VALUE``) apply after the profile's, e.g. ``training.mixed_precision=float32``.
    The demo replaces the folders an earlier demo made; others only with `overwrite` (see
    `prepare_demo`, which runs first).
    """
    # TensorFlow only now, after the checks.
    from export.run_export import compare_bundle, export_run
    from kerasmed.evaluation.evaluate import evaluate
    from kerasmed.tasks import training_task
    from kerasmed.training.trainer import train

    workdir = Path(workdir)
    t0 = time.monotonic()
    plan = prepare_demo(workdir, config_path, profile, overrides, overwrite)
    config, run_dir = plan.config, plan.config.run_dir()
    _step("generating synthetic lung CT", t0)
    task = training_task(config.task)
    task.generate(config, config.data.root, progress=progress, overwrite=plan.replace_data,
                  created_by=DEMO)
    _step(f"training ({profile} profile)", t0)
    run_dir.mkdir(parents=True, exist_ok=True)
    if read_marker(run_dir) is None and not user_entries(run_dir):
        write_marker(run_dir, RUN, DEMO)  # so that the next demo may train it again
    train_summary = train(config, progress=progress, overwrite=plan.replace_run)
    _step("evaluating on whole validation cases", t0)
    ev = evaluate(run_dir, progress=progress)
    _step("exporting SavedModel, TFLite and ONNX", t0)
    bundle = export_run(run_dir)
    _step("checking parity on the validation cases", t0)
    result, parity_dir = compare_bundle(bundle, progress=progress)
    machine = cpu_info()
    report = _write_report(workdir / "report", run_dir, bundle, ev, train_summary, result, t0, machine)
    print()
    print(task.headline(ev))
    print(demo_table(result, bundle))
    print(f"parity: {'PASS' if result.passed else 'FAIL'}   total {time.monotonic() - t0:.0f} s   "
          f"on {describe_cpu(machine)}")
    print(f"report folder: {report}")
    return 0 if result.passed else 1


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def demo_table(result, bundle: Path) -> str:
    """One row per artefact: size, max abs error against Keras, the task's first agreement figure
    (segmentation: mean Dice agreement), verdict."""
    first = next(iter(result.artefacts.values()))
    agreement = next(iter(first.task_columns), "agreement")
    rows = [("artefact", "size MB", "max abs err", "tolerance", agreement, "result")]
    for key, a in result.artefacts.items():
        rows.append((key, f"{_size_mb(bundle / a.file):.2f}", f"{a.max_abs_error:.2e}",
                     f"{a.tolerances.max_abs:g}" if a.tolerances.max_abs is not None else "-",
                     a.task_columns.get(agreement, "-"), "pass" if a.passed else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def _write_report(folder: Path, run_dir: Path, bundle: Path, ev: dict, train_summary: dict,
                  result, t0: float, machine: dict) -> Path:
    from export.parity_report import format_table

    with atomic_dir(folder) as tmp:
        write_marker(tmp, REPORT, DEMO)
        for rel in REPORT_FILES:
            if (run_dir / rel).is_file():
                shutil.copy2(run_dir / rel, tmp / Path(rel).name)
        summary = {
            "evaluation": ev,
            "training": train_summary,
            "parity": result.to_dict(local=True),  # a local report: case ids kept
            "run_dir": str(run_dir),
            "bundle": str(bundle),
            "seconds": round(time.monotonic() - t0, 1),
            "machine": machine,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (tmp / "summary.md").write_text(
            "# kerasmed demo\n\n"
            f"- model mean Dice on {ev['cases']} validation cases: **{ev['mean_dice']:.3f}**\n"
            f"- baseline ({ev['baseline']}): **{ev['baseline_mean_dice']:.3f}**\n"
            f"- training: {train_summary['epochs_run']} epochs, {train_summary['train_seconds']:.0f} s, "
            f"{train_summary['dtype_policy']}\n"
            f"- machine: {describe_cpu(summary['machine'])}\n- run: `{run_dir}`\n- bundle: `{bundle}`\n\n"
            "## Parity against Keras\n\n" + format_table(result, markdown=True) + "\n\n"
            "![training curves](training_curves.png)\n![Dice per case](dice_per_case.png)\n"
            "![overlays](overlay_montage.png)\n![parity](parity.png)\n"
        )
    return folder
