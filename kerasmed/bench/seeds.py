"""`kerasmed bench-seeds`: how much a config's validation Dice depends on the seed.

One config trained and evaluated once per seed, in one process, on the same machine: per-seed whole-
case Dice (and the baseline), its mean, min and max. A recipe whose mean is fine but whose worst seed
is not will pass on one machine and fail on the next, since another CPU's float rounding diverges
like a new seed; this is the measuring stick for that.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import keras

from kerasmed.bench.machine import cpu_info, describe_cpu
from kerasmed.bench.report import plt
from kerasmed.bench.train_bench import _bench_config
from kerasmed.config import Config, config_from_dict
from kerasmed.evaluation.evaluate import evaluate
from kerasmed.training.trainer import train
from serving.atomic import atomic_file, atomic_write_text
from serving.errors import ConfigError
from serving.ownership import RUN, check_output_folder, read_marker, user_entries, write_marker

SEEDS = "kerasmed bench-seeds"  # `created_by` of the run folders it makes, which a rerun replaces


def run_seed_bench(config: Config, seeds, out_dir: str | Path = "bench/seeds", split: str | None = None,
                   progress: bool = True) -> dict:
    """Train and evaluate `config` once per seed; write `seeds.json`, `seeds.md`, `seeds.png`.

    Args:
        config: validated config; its dataset is generated under `out_dir` when absent.
        seeds: distinct integer seeds (at least one).
        out_dir: output folder; runs go to `out_dir/runs/seed<N>/`.
        split: split to evaluate; default `evaluation.split`.
        progress: show progress bars.

    Returns:
        The result written to `seeds.json`.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"`--seeds` must list distinct integers. Received: {seeds}")
    out_dir = Path(out_dir)
    # Every run folder is checked before anything is written: the ones an earlier bench-seeds
    # made are trained again, anyone else's are refused.
    for seed in seeds:
        check_output_folder(out_dir / "runs" / f"seed{seed}" / config.name, f"The run folder of seed {seed}",
                            RUN, flag=None, owned=lambda marker: marker.get("created_by") == SEEDS)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _bench_config(config, out_dir, config.synthetic.num_cases)
    started, rows = time.monotonic(), []
    for seed in seeds:
        raw = config.to_dict()
        raw["seed"], raw["output_dir"] = seed, str(out_dir / "runs" / f"seed{seed}")
        run_config = config_from_dict(raw, f"seed {seed}")
        run_dir = run_config.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        if read_marker(run_dir) is None and not user_entries(run_dir):
            write_marker(run_dir, RUN, SEEDS)
        summary = train(run_config, progress=progress, overwrite=True)
        ev = evaluate(run_config.run_dir(), split=split, progress=progress)
        rows.append({"seed": seed, "mean_dice": ev["mean_dice"],
                     "baseline_mean_dice": ev["baseline_mean_dice"], "cases": ev["cases"],
                     "best_epoch": summary["best_epoch"],
                     "train_seconds": summary["train_seconds"], "dtype_policy": summary["dtype_policy"]})
        keras.backend.clear_session()
    dice = [r["mean_dice"] for r in rows]
    info = cpu_info()
    result = {
        "config": config.name, "split": split or config.evaluation.split, "seeds": rows,
        "mean": statistics.fmean(dice), "min": min(dice), "max": max(dice),
        "stdev": statistics.stdev(dice) if len(dice) > 1 else 0.0,
        "machine": info, "cpu_line": describe_cpu(info), "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_text(out_dir / "seeds.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / "seeds.md", seeds_markdown(result))
    _plot(result, out_dir / "seeds.png")
    return result


def seeds_markdown(result: dict) -> str:
    lines = [f"Validation Dice by seed, `{result['config']}` ({result['split']} split), "
             f"on {result['cpu_line']}.", "",
             "| seed | mean Dice | baseline | cases | best epoch | train s | dtype |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['mean_dice']:.3f} | {r['baseline_mean_dice']:.3f} | {r['cases']} | "
              f"{r['best_epoch']} | {r['train_seconds']:.0f} | {r['dtype_policy']} |"
              for r in result["seeds"]]
    lines += ["", f"- over {len(result['seeds'])} seeds: mean **{result['mean']:.3f}**, "
              f"min **{result['min']:.3f}**, max {result['max']:.3f}, stdev {result['stdev']:.3f}", ""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    rows = result["seeds"]
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 3, 3.2))
    labels = [f"seed {r['seed']}" for r in rows]
    ax.bar(labels, [r["mean_dice"] for r in rows], color="#1f77b4", label="model")
    ax.scatter(labels, [r["baseline_mean_dice"] for r in rows], color="#ee7733", zorder=3, label="baseline")
    ax.axhline(result["mean"], color="black", lw=1, ls="--", label=f"mean {result['mean']:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"mean Dice ({result['split']})")
    ax.set_title(f"{result['config']}\n{result['cpu_line']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
