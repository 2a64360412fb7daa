"""Write an ingestion benchmark as `ingest.json`, `ingest.md` and a bar chart `ingest.png`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kerasmed.bench.report import save_figure, write_bench_files  # noqa: E402

INPUT, TRAINING = "#1f77b4", "#ee7733"


def _rows(result: dict) -> list[tuple[str, str, dict]]:
    """`(stage, unit, {median, min, max})` in table order."""
    single = result["ingestion"]["single_process"]
    build = result["ingestion"]["build_cache"]
    return [
        ("DICOM ingestion, 1 process (read + preprocess + np.save)", "slices/s", single["slices_per_s"]),
        ("DICOM ingestion, 1 process", "source MB/s", single["mb_per_s"]),
        ("build_cache, 1 process", "slices/s", build["one_process_slices_per_s"]),
        (f"build_cache, {build['workers']} worker processes", "slices/s", build["slices_per_s"]),
        ("cached tf.data pipeline, no model", "patches/s", result["cache_pipeline"]["patches_per_s"]),
        ("training consumes", "patches/s", result["training"]),
    ]


def ingest_markdown(result: dict) -> str:
    """The benchmark as a Markdown table plus the machine line, the sources and the ratios."""
    d, s, p = result["dataset"], result["sampling"], result["protocol"]
    share = result["ingestion"]["single_process"]["time_share"]
    lines = [
        f"Ingestion and cache throughput, `{result['config']}`: {d['description']}, "
        f"{d['source_slices']} source slices, {d['source_mb']:.0f} MB (DICOM series + masks); "
        f"patch {s['patch_size'][0]}x{s['patch_size'][1]}, {s['context_slices']} slices in, "
        f"batch {s['batch_size']}.",
        "",
        f"Machine: {result['cpu_line']}; TensorFlow {result['versions']['tensorflow']}, "
        f"numpy {result['versions']['numpy']}. Page cache: {result['page_cache']}.",
        "",
        "| stage | unit | median | min | max |",
        "|---|---|---|---|---|",
    ]
    for stage, unit, v in _rows(result):
        lines.append(f"| {stage} | {unit} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |")
    r = result["ratios"]
    met = "met" if result["target_met"] else "NOT met"
    lines += [
        "",
        f"Training figure: {result['training']['source']}. Ingestion time, 1 process: read "
        f"{100 * share['read']:.0f}%, preprocess {100 * share['preprocess']:.0f}%, save "
        f"{100 * share['save']:.0f}%.",
        "",
        f"{p['repeats']} interleaved rounds (ingestion pass, cache builds, pipeline window of "
        f"{p['window_batches']} batches after {p['warmup_batches']} untimed); ratios of medians from "
        "this one run (training slices/s: one sampled slice per patch):",
        "",
        f"- cached pipeline vs training: **{r['cache_pipeline_vs_training']:.2f}x** (target "
        f">= {result['target_cache_pipeline_vs_training']:g}x: {met})",
        f"- ingestion, 1 process, vs training slices: **{r['ingestion_vs_training_slices']:.2f}x**",
        f"- build_cache vs training slices: **{r['build_cache_vs_training_slices']:.2f}x**",
    ]
    return "\n".join(lines) + "\n"


def plot_ingest(result: dict, path: Path) -> None:
    """Two panels of median bars with min-max whiskers: slices/s and patches/s."""
    single = result["ingestion"]["single_process"]["slices_per_s"]
    build = result["ingestion"]["build_cache"]
    training = result["training"]
    panels = [
        ("slices per second", [
            ("ingestion, 1 process", single, INPUT),
            ("build_cache, 1 process", build["one_process_slices_per_s"], INPUT),
            (f"build_cache, {build['workers']} workers", build["slices_per_s"], INPUT),
            ("training consumes\n(1 slice per patch)", training, TRAINING),
        ]),
        ("patches per second", [
            ("cached tf.data pipeline", result["cache_pipeline"]["patches_per_s"], INPUT),
            ("training consumes", training, TRAINING),
        ]),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (unit, bars) in zip(axes, panels):
        names = [b[0] for b in bars]
        med = [b[1]["median"] for b in bars]
        err = [[m - b[1]["min"] for m, b in zip(med, bars)], [b[1]["max"] - m for m, b in zip(med, bars)]]
        ax.barh(names, med, xerr=err, capsize=4, color=[b[2] for b in bars])
        for i, (m, b) in enumerate(zip(med, bars)):  # beside the whisker, not on it
            ax.text(b[1]["max"], i, f"  {m:.0f}", va="center", ha="left", fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(f"{unit} (median, min-max whiskers)")
        ax.set_xlim(0, max(b[1]["max"] for b in bars) * 1.25)
        ax.grid(axis="x", alpha=0.3)
    r = result["ratios"]["cache_pipeline_vs_training"]
    fig.suptitle(f"{result['config']}: cached pipeline {r:.1f}x training consumption\n"
                 f"{result['cpu_line']}", fontsize=9)
    save_figure(fig, path)


def write_ingest_report(result: dict, out_dir: Path) -> None:
    write_bench_files(out_dir, "ingest", result, ingest_markdown, plot_ingest)
