"""`kerasmed bench-train`, `bench-ingest` and `bench-seeds`, contributed to the CLI through the
`kerasmed.commands` entry points."""

from __future__ import annotations

import argparse

# Integer options are checked by argparse (`positive_int`), before TensorFlow is imported: a
# mistyped `--repeats 0` is one line at once, not after 12 s of imports.

# What the bench commands write into `--output`: their reports, the synthetic `data/` and the
# seeds' `runs/`, and `seeds/` (bench-seeds' default under bench-train's `bench/`).
_BENCH_ENTRIES = (*(f"{stem}.{ext}" for stem in ("train", "ingest", "seeds")
                    for ext in ("json", "md", "png")), "data", "runs", "seeds")


def _earlier_bench(folder) -> bool:
    """A benchmark folder of a kerasmed version before the marker: only bench entries, one of
    them a report."""
    from serving.ownership import holds_only

    return holds_only(_BENCH_ENTRIES)(folder) and any(
        (folder / f"{stem}.json").is_file() for stem in ("train", "ingest", "seeds"))


def _own_output(args, command: str) -> None:
    """Refuse, before TensorFlow loads, an `--output` that is a file, a folder the user made or a
    folder inside a model bundle; then mark it as the benchmark's (`.kerasmed`), so that a rerun,
    even after a failed run, may write there again."""
    from pathlib import Path

    from serving.ownership import BENCH, check_output_folder, write_marker

    check_output_folder(args.output, "`--output` (the benchmark folder)", BENCH, flag=None,
                        legacy=_earlier_bench)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    write_marker(args.output, BENCH, f"kerasmed {command}")

def _bench_train(args) -> int:
    from kerasmed.bench import require_segmentation
    from kerasmed.cli import import_tensorflow
    from kerasmed.config import load_config

    config = load_config(args.config, args.overrides)
    require_segmentation(config, "bench-train")
    _own_output(args, "bench-train")
    if args.peer:
        from kerasmed.bench.torch_peer import import_torch

        import_torch()
    import_tensorflow()
    from kerasmed.bench.report import train_markdown
    from kerasmed.bench.train_bench import run_train_bench

    result = run_train_bench(config, args.output, repeats=args.repeats, window=args.window,
                             warmup=args.warmup, peer=args.peer, cases=args.cases,
                             progress=not args.quiet)
    print(train_markdown(result))
    print(f"written: {args.output}/train.json, train.md, train.png ({result['seconds']:.0f} s)")
    return 0


def _positive_int(text: str) -> int:
    from kerasmed.cli import positive_int

    return positive_int(text)


def _parser(sub: argparse._SubParsersAction, name: str, output: str, **texts) -> argparse.ArgumentParser:
    """A bench subcommand taking CONFIG, `--set` and `--output` (default `output`)."""
    from kerasmed.cli import add_config_arguments

    p = sub.add_parser(name, **texts)
    add_config_arguments(p)
    p.add_argument("--output", default=output, help=f"output folder (default: {output})")
    return p


def register_bench_train(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub, "bench-train", "bench", help="training throughput: tf.data vs in-memory ceiling vs PyTorch",
        description="Time training of the config's model through the real tf.data pipeline, from "
        "constant in-memory tensors (the ceiling) and as the same U-Net in plain PyTorch, in "
        "interleaved windows; report median/min/max patches/s, GFLOP/s against a measured matmul "
        "peak, and the CPU. Writes OUTPUT/train.json, train.md and train.png.",
    )
    p.add_argument("--repeats", type=_positive_int, default=5, help="timed windows per variant (default: 5)")
    p.add_argument("--window", type=_positive_int, default=15, help="timed steps per window (default: 15)")
    p.add_argument("--warmup", type=_positive_int, default=4,
                   help="untimed steps before each window (default: 4)")
    p.add_argument("--cases", type=_positive_int, default=8,
                   help="synthetic cases to generate when the config's dataset is absent (default: 8)")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip the PyTorch peer")
    p.set_defaults(func=_bench_train)


def _bench_ingest(args) -> int:
    from kerasmed.cli import import_tensorflow
    from kerasmed.config import load_config

    config = load_config(args.config, args.overrides)
    _own_output(args, "bench-ingest")
    import_tensorflow()
    from kerasmed.bench.ingest_bench import run_ingest_bench
    from kerasmed.bench.ingest_report import ingest_markdown

    result = run_ingest_bench(config, args.output, cases=args.cases, repeats=args.repeats,
                              window=args.window, data=args.data, progress=not args.quiet)
    print(ingest_markdown(result))
    print(f"written: {args.output}/ingest.json, ingest.md, ingest.png ({result['seconds']:.0f} s)")
    return 0


def register_bench_ingest(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub, "bench-ingest", "bench",
        help="DICOM ingestion and cache throughput against what training consumes",
        description="Time DICOM series ingestion (read_image + preprocess + np.save, one process; "
        "and build_cache with one worker per CPU) in slices/s and MB/s, and the cached tf.data "
        "training pipeline without a model in patches/s, in interleaved rounds (page cache warm); "
        "compare them with the training throughput of OUTPUT/train.json from bench-train (measured "
        "here when absent or of another setup). Writes OUTPUT/ingest.json, ingest.md and ingest.png.",
    )
    p.add_argument("--cases", type=_positive_int, default=None,
                   help="synthetic cases to generate (default: 32), or the first N of --data (default: all)")
    p.add_argument("--data", help="an existing dataset folder (with the config's data.manifest) to "
                   "ingest instead of synthetic cases")
    p.add_argument("--repeats", type=_positive_int, default=5, help="timed rounds (default: 5)")
    p.add_argument("--window", type=_positive_int, default=200,
                   help="pipeline batches per timed window (default: 200)")
    p.set_defaults(func=_bench_ingest)


def _bench_seeds(args) -> int:
    from kerasmed.cli import import_tensorflow
    from kerasmed.config import load_config

    if len(set(args.seeds)) != len(args.seeds):
        from serving.errors import ConfigError

        raise ConfigError(f"`--seeds` must list distinct integers. Received: {args.seeds}")
    config = load_config(args.config, args.overrides)
    _own_output(args, "bench-seeds")
    import_tensorflow()
    from kerasmed.bench.seeds import run_seed_bench, seeds_markdown

    result = run_seed_bench(config, args.seeds, args.output, split=args.split, progress=not args.quiet)
    print(seeds_markdown(result))
    print(f"written: {args.output}/seeds.json, seeds.md, seeds.png ({result['seconds']:.0f} s)")
    return 0


def register_bench_seeds(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub, "bench-seeds", "bench/seeds", help="validation Dice of one config over several seeds",
        description="Train and evaluate the config once per seed in one process and report per-seed "
        "whole-case Dice, mean, min and max. Writes OUTPUT/seeds.json, seeds.md and seeds.png.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="split to evaluate (default: the config's)")
    p.set_defaults(func=_bench_seeds)
