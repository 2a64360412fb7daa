"""`kerasmed bench-train`: training throughput through tf.data, against its ceiling and PyTorch.

In one process and one run, on the config's model, patch size and batch:
- **kerasmed, tf.data**: `model.fit` fed by the project's real pipeline (memory-mapped cache,
  balanced sampling, 2.5D stacks, augmentation);
- **kerasmed, in-memory**: the same compiled model fed one constant batch (the ceiling: what the
  model trains at when input costs nothing), so the pipeline's efficiency is a ratio;
- **PyTorch** (NCHW eager and channels-last): the same U-Net in plain PyTorch, float32 on the CPU,
  trained from memory (its own ceiling, which favours it), the peer a user would otherwise pick. It
  runs in a child process so that neither framework's idle thread pool competes with the other.

Machines swing from run to run, so each variant is timed in `repeats` windows of `window` steps,
interleaved (A B C D A B C D ...), after `warmup` untimed steps per window (compile, iterator
start-up); the report gives median, min and max. FLOPs per patch, achieved GFLOP/s and a measured
float32 matmul peak show how far the model is from the hardware.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasmed.bench import require_segmentation
from kerasmed.bench.flops import training_flops
from kerasmed.bench.machine import cpu_info, describe_cpu, matmul_peak_gflops
from kerasmed.config import Config, config_from_dict
from kerasmed.data.cache import load_cache
from kerasmed.models.registry import build_model
from kerasmed.training.strategy import resolve_precision
from kerasmed.training.trainer import build_compiled_model, cache_for, train_dataset
from serving.errors import ConfigError
from serving.ownership import DATASET, check_output_folder


class _StepTimer(keras.callbacks.Callback):
    """Seconds from the end of step `warmup` to the end of the last step of a `fit` call."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.start = self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def _bench_config(config: Config, out_dir: Path, cases: int) -> Config:
    """The config pointed at its dataset, or at a small synthetic one generated under `out_dir`."""
    root = Path(config.data.root)
    if (root / config.data.manifest).is_file():
        return config
    from kerasmed.data.generate import generate_dataset

    raw = config.to_dict()
    raw["data"] = {**raw["data"], "root": str(out_dir / "data"), "manifest": "manifest.csv",
                   "cache_dir": None}
    raw["synthetic"] = {**raw["synthetic"], "num_cases": cases}
    bench = config_from_dict(raw, "bench config")
    if not (out_dir / "data" / "manifest.csv").is_file():
        # Only a synthetic dataset kerasmed made there is replaced, never the user's files.
        replace = check_output_folder(out_dir / "data", "The benchmark's data folder (under `--output`)",
                                      DATASET, flag=None)
        s = bench.synthetic
        generate_dataset(out_dir / "data", num_cases=s.num_cases, seed=s.seed, shape=s.shape,
                         split_fractions=s.split_fractions, progress=False, overwrite=replace,
                         created_by="kerasmed bench")
    return bench


def _summary(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "runs": [round(r, 2) for r in rates]}


def run_train_bench(config: Config, out_dir: str | Path = "bench", repeats: int = 5, window: int = 15,
                    warmup: int = 4, peer: bool = True, cases: int = 8, progress: bool = True) -> dict:
    """Measure training throughput and write `train.json`, `train.md` and `train.png`.

    Args:
        config: the experiment config whose model, patch size, batch and precision are measured.
        out_dir: output folder (also holds a small synthetic dataset when the config's is absent).
        repeats: timed windows per variant (interleaved).
        window: timed steps per window.
        warmup: untimed steps before each window.
        peer: also time the PyTorch twin (needs the `bench` extra).
        cases: synthetic cases to generate when the config's dataset does not exist.
        progress: show a progress bar.

    Returns:
        The result written to `train.json`.

    Raises:
        ConfigError: for a config of another task than segmentation, or counts below 1.
    """
    require_segmentation(config, "bench-train")
    if repeats < 1 or window < 1 or warmup < 1:
        raise ConfigError(f"`repeats`, `window` and `warmup` must be >= 1. Received: repeats={repeats}, "
                          f"window={window}, warmup={warmup}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    config = _bench_config(config, out_dir, cases)
    train_cases = load_cache(cache_for(config, progress=False), "train")
    s, m, t = config.sampling, config.model, config.training
    batch, patch = s.batch_size, tuple(s.patch_size)

    policy = resolve_precision(t.mixed_precision)
    policies = [policy] + (["float32"] if policy != "float32" else [])
    runners: dict[str, dict] = {}
    images = masks = None
    for p in policies:
        keras.mixed_precision.set_global_policy(p)
        model = build_compiled_model(config)
        pipeline = train_dataset(config, train_cases)
        x, y = next(iter(pipeline))
        if images is None:
            images, masks = x.numpy(), y.numpy()
        constant = tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(masks))).repeat()
        suffix = "" if p == "float32" else f" ({p})"
        runners[f"kerasmed tf.data{suffix}"] = {"kind": "keras", "model": model, "data": pipeline,
                                                 "dtype": p, "framework": "kerasmed"}
        runners[f"kerasmed in-memory{suffix}"] = {"kind": "keras", "model": model, "data": constant,
                                                   "dtype": p, "framework": "kerasmed"}
    keras.mixed_precision.set_global_policy("float32")

    if peer:
        from kerasmed.bench.torch_peer import TorchPeerProcess

        kwargs = {"num_classes": m.num_classes, "filters": m.filters, "depth": m.depth,
                  "normalization": m.normalization, "hu_window": m.hu_window,
                  "learning_rate": t.learning_rate, "dice_weight": t.dice_weight,
                  "threads": tf.config.threading.get_intra_op_parallelism_threads() or None}
        for name, channels_last in (("PyTorch eager NCHW", False), ("PyTorch channels-last", True)):
            runners[name] = {"kind": "torch", "dtype": "float32", "framework": "PyTorch",
                             "peer": TorchPeerProcess(images, masks, channels_last, **kwargs)}

    rates: dict[str, list[float]] = {name: [] for name in runners}
    bar = tqdm(total=repeats * len(runners), desc="bench-train", disable=not progress)
    try:
        for _ in range(repeats):
            for name, r in runners.items():
                rates[name].append(batch * window / _time_window(r, warmup, window))
                bar.update()
    finally:
        bar.close()
        for r in runners.values():
            if "peer" in r:
                r["peer"].close()

    peer_info = next((r["peer"].info for r in runners.values() if "peer" in r), {})
    flops_model = build_model(m.name, input_shape=(*patch, m.context_slices), num_classes=m.num_classes,
                              filters=m.filters, depth=m.depth, normalization=m.normalization,
                              hu_window=m.hu_window)
    flops = training_flops(flops_model)
    peak = matmul_peak_gflops()
    info = cpu_info()
    variants = {}
    for name, r in runners.items():
        stats = _summary(rates[name])
        gflops = stats["median"] * flops / 1e9
        variants[name] = {**stats, "dtype": r["dtype"], "framework": r["framework"],
                          "gflops": gflops, "fraction_of_matmul_peak": gflops / peak}
    result = {
        "config": config.name,
        "model": {"name": m.name, "filters": m.filters, "depth": m.depth, "context_slices": m.context_slices,
                  "normalization": m.normalization, "trainable_params": _trainable(runners)},
        "patch_size": list(patch),
        "batch_size": batch,
        "dtype_policy": policy,
        "training_gflop_per_patch": flops / 1e9,
        "matmul_peak_gflops_float32": peak,
        "cpu": info,
        "cpu_line": describe_cpu(info),
        "threads": {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "torch": peer_info.get("threads")},
        "tensorflow_onednn": _onednn_enabled(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "torch": peer_info.get("version")},
        "protocol": {"repeats": repeats, "window_steps": window, "warmup_steps": warmup,
                     "interleaved": True, "unit": "patches per second (steady state)"},
        "variants": variants,
        "ratios": _ratios(variants, policy),
        "seconds": round(time.monotonic() - started, 1),
    }
    from kerasmed.bench.report import write_train_report

    write_train_report(result, out_dir)
    return result


def _onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (`kerasmed/__init__.py` turns them
    on where TensorFlow would not: AVX2-only x86 CPUs)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _time_window(runner: dict, warmup: int, window: int) -> float:
    if runner["kind"] == "torch":
        return runner["peer"].time_steps(warmup, window)
    timer = _StepTimer(warmup)
    runner["model"].fit(runner["data"], epochs=1, steps_per_epoch=warmup + window, verbose=0,
                        callbacks=[timer])
    return timer.end - timer.start


def _ratios(variants: dict, policy: str) -> dict:
    def med(name):
        return variants[name]["median"] if name in variants else None

    suffix = "" if policy == "float32" else f" ({policy})"
    out = {"pipeline_vs_ceiling": med(f"kerasmed tf.data{suffix}") / med(f"kerasmed in-memory{suffix}")}
    if suffix:
        out["pipeline_vs_ceiling_float32"] = med("kerasmed tf.data") / med("kerasmed in-memory")
    peers = [v["median"] for v in variants.values() if v["framework"] == "PyTorch"]
    if peers:
        out["pipeline_float32_vs_best_pytorch"] = med("kerasmed tf.data") / max(peers)
        if suffix:
            out[f"pipeline_{policy}_vs_best_pytorch"] = med(f"kerasmed tf.data{suffix}") / max(peers)
    return out


def _trainable(runners: dict) -> dict:
    out = {}
    for r in runners.values():
        if r["kind"] == "keras" and "keras" not in out:
            out["keras"] = int(sum(np.prod(w.shape) for w in r["model"].trainable_weights))
        if r["kind"] == "torch" and "torch" not in out:
            out["torch"] = r["peer"].info["trainable_params"]
    return out
