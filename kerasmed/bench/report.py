"""Write a training benchmark as `train.json`, `train.md` and a bar chart `train.png`."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from serving.atomic import atomic_file, atomic_write_text  # noqa: E402

COLOURS = {"kerasmed": "#1f77b4", "PyTorch": "#ee7733"}


def train_markdown(result: dict) -> str:
    """The benchmark as a Markdown table plus the machine line and the ratios."""
    lines = [
        f"Training throughput, `{result['config']}`: {result['model']['name']} "
        f"(filters {result['model']['filters']}, depth {result['model']['depth']}, "
        f"{result['model']['context_slices']} slices in), patch {result['patch_size'][0]}x"
        f"{result['patch_size'][1]}, batch {result['batch_size']}, "
        f"{result['training_gflop_per_patch']:.2f} GFLOP per patch (forward + backward).",
        "",
        f"Machine: {result['cpu_line']}; TensorFlow {result['versions']['tensorflow']}, "
        f"Keras {result['versions']['keras']}"
        + f" (oneDNN kernels {'on' if result.get('tensorflow_onednn') else 'off'})"
        + (f", PyTorch {result['versions']['torch']}" if result["versions"]["torch"] else "")
        + f"; float32 matmul peak {result['matmul_peak_gflops_float32']:.0f} GFLOP/s.",
        "",
        "| variant | dtype | patches/s median | min | max | GFLOP/s | of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        lines.append(f"| {name} | {v['dtype']} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} | "
                     f"{v['gflops']:.0f} | {100 * v['fraction_of_matmul_peak']:.0f}% |")
    p = result["protocol"]
    lines += ["", f"{p['repeats']} interleaved windows of {p['window_steps']} steps per variant, each after "
              f"{p['warmup_steps']} untimed steps; ratios of medians from this one run:", ""]
    for key, value in result["ratios"].items():
        lines.append(f"- {key.replace('_', ' ')}: **{value:.2f}x**")
    return "\n".join(lines) + "\n"


def plot_train(result: dict, path: Path) -> None:
    """Horizontal bars of median patches/s with min-max whiskers, one per variant."""
    names = list(result["variants"])
    v = [result["variants"][n] for n in names]
    med = [x["median"] for x in v]
    err = [[m - x["min"] for m, x in zip(med, v)], [x["max"] - m for m, x in zip(med, v)]]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(names) + 1.6))
    ax.barh(names, med, xerr=err, capsize=4, color=[COLOURS.get(x["framework"], "grey") for x in v])
    for i, m in enumerate(med):
        ax.text(m, i, f"  {m:.0f}", va="center", ha="left", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("training patches per second (median, min-max whiskers)")
    ax.set_title(f"{result['config']}: batch {result['batch_size']}, patch "
                 f"{result['patch_size'][0]}x{result['patch_size'][1]}\n{result['cpu_line']}", fontsize=9)
    ax.set_xlim(0, max(x["max"] for x in v) * 1.18)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out, write atomically (PNG, 110 dpi) and close a bench chart."""
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_bench_files(out_dir: Path, stem: str, result: dict, markdown, plot) -> None:
    """`<stem>.json`, `<stem>.md` (`markdown(result)`) and `<stem>.png` (`plot(result, path)`)."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / f"{stem}.md", markdown(result))
    plot(result, out_dir / f"{stem}.png")


def write_train_report(result: dict, out_dir: Path) -> None:
    write_bench_files(out_dir, "train", result, train_markdown, plot_train)
