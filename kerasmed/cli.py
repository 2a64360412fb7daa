"""The `kerasmed` command.

Subcommands come from the `kerasmed.commands` entry-point group: this module defines
`generate`, `train` and `evaluate`; the `export` package contributes `export`, `compare` and `demo`
without `kerasmed` importing it. User errors print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from importlib.metadata import entry_points

from serving.errors import REFUSALS, ConfigError, KerasmedError, StorageError

EXIT_USER_ERROR = 2


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def import_tensorflow() -> None:
    """Import TensorFlow and probe devices once with stderr silenced.

    TF 2.2x writes absl log lines (oneDNN notice, "could not find cuda drivers", cuInit failure)
    straight to file descriptor 2 before Python logging exists; TF_CPP_MIN_LOG_LEVEL does not stop
    them. Python exceptions are unaffected. Commands call this after validating their input, so
    user errors stay one line.
    """
    if "tensorflow" in sys.modules:
        return
    fd = 2  # the process-level stderr, whatever sys.stderr has been replaced with
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, fd)
        import tensorflow as tf

        tf.config.list_physical_devices()
        # TensorFlow leaves ~350k long-lived objects; every full collection would walk them again
        # (about 0.2 s each). Freezing moves them out of the collector's way for the whole command.
        gc.freeze()
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("config", nargs=None if required else "?",
                        help="YAML experiment config, e.g. configs/lung_nodule_seg_2d.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.epochs=5 (repeatable)")


def _generate(args) -> int:
    from kerasmed.config import load_config
    from kerasmed.tasks import training_task

    config = load_config(args.config, args.overrides)
    manifest = training_task(config.task).generate(
        config, args.output or config.data.root, progress=not args.quiet, overwrite=args.overwrite)
    print(f"dataset: {manifest}")
    return 0


def _preprocess(args) -> int:
    from kerasmed.config import load_config
    from kerasmed.training.inputs import preprocess_dataset

    config = load_config(args.config, args.overrides)
    r = preprocess_dataset(config, workers=args.workers, prune=args.prune, progress=not args.quiet)
    print(f"cache: {r.folder}  cases: {r.built} built, {r.reused} reused"
          + (f"; {r.pruned} unused case/index folders pruned" if args.prune else ""))
    print(f"index: {r.index}")
    return 0


def _train(args) -> int:
    from kerasmed.config import load_config
    from kerasmed.data.check import training_cases
    from kerasmed.run import check_run_dir
    from kerasmed.training.cluster import check_environment, wait_for_peers
    from kerasmed.training.launcher import check_local_workers

    if args.workers < 1:
        raise ConfigError(f"`--workers` must be at least 1. Received: --workers {args.workers}")
    if args.workers > 1:
        check_local_workers(args.workers)  # CPUs and memory
    else:
        check_environment()  # TF_CONFIG and KERASMED_PEER_TIMEOUT, before anything is read
    config = load_config(args.config, args.overrides)
    if not args.skip_bad:  # with it, the check (which reads every file) runs in `train`
        training_cases(config)
    run_dir = args.run_dir or config.run_dir()
    check_run_dir(run_dir, args.overwrite)  # here too, so that N workers never start to refuse
    if args.workers > 1:
        return _launch_workers(args, config, run_dir)
    # In Python, where SIGTERM is heard, rather than in TensorFlow's endless wait for the others.
    wait_for_peers()
    import_tensorflow()
    from kerasmed.training.trainer import train

    summary = train(config, args.run_dir, progress=not args.quiet, overwrite=args.overwrite,
                    skip_bad=args.skip_bad)
    if not summary["chief"]:
        print(f"worker {summary['worker']}: training finished; the chief writes {run_dir}")
        return 0
    monitor = summary["monitor"]  # the task's validation metric, e.g. val_dice, val_auc
    best = summary[f"best_{monitor}"]
    baseline = summary.get("baseline") or {}
    beside = "".join(f"; baseline ({baseline['name']}) {k} {v:.3f}" for k, v in baseline.items()
                     if k != "name" and v is not None)
    print(f"run: {run_dir}  best {monitor} {'n/a' if best is None else f'{best:.3f}'} "
          f"at epoch {summary['best_epoch']}, {summary['train_seconds']:.0f} s{beside}")
    return 0


def _launch_workers(args, config, run_dir) -> int:
    from kerasmed.data.check import training_cases
    from kerasmed.training.inputs import cache_for
    from kerasmed.training.launcher import launch_local_workers

    # Once, here, rather than raced by every worker (each worker checks again with --skip-bad).
    cases = training_cases(config, args.skip_bad, progress=not args.quiet)
    cache_for(config, progress=not args.quiet, manifest=cases)
    worker_args = ["--quiet"] if args.quiet else []
    worker_args += ["train", str(args.config), *(f"--set={o}" for o in args.overrides)]
    if args.run_dir:
        worker_args += ["--run-dir", str(args.run_dir)]
    if args.overwrite:
        worker_args.append("--overwrite")
    if args.skip_bad:
        worker_args.append("--skip-bad")
    code = launch_local_workers(worker_args, args.workers)
    if code == 0:
        print(f"run: {run_dir}  ({args.workers} workers)")
    else:
        print(f"kerasmed train: a worker failed (exit code {code})", file=sys.stderr)
    return code


def _evaluate(args) -> int:
    from kerasmed.run import load_run

    load_run(args.run_dir)
    import_tensorflow()
    from kerasmed.evaluation.evaluate import evaluate
    from kerasmed.tasks import training_task

    s = evaluate(args.run_dir, split=args.split, progress=not args.quiet)
    print(f"{training_task(s['task']).headline(s)}  -> {args.run_dir}/eval")
    for warning in s.get("warnings") or []:  # e.g. a calibration that failed; fails nothing
        print(f"warning: {warning}")


def _explain(args) -> int:
    from pathlib import Path

    from kerasmed.explain_run import check_explain_folder
    from kerasmed.run import load_run

    run_dir, _ = load_run(args.run_dir)
    # Before TensorFlow loads: the command's own folder, never a file or a user's folder.
    check_explain_folder(args.output or Path(run_dir) / "explain", "`--output` (the explanation "
                         "folder)" if args.output else "The explanation folder (default: RUN_DIR/explain)")
    import_tensorflow()
    from kerasmed.explain_run import explain_run

    table = explain_run(args.run_dir, args.images, args.output, layer=args.layer,
                        occlusion=not args.no_occlusion, progress=not args.quiet)
    out = args.output or f"{args.run_dir}/explain"
    print(f"explained {len(table)} image(s): Grad-CAM{'' if args.no_occlusion else ' and occlusion'} "
          f"maps and explain.csv -> {out}")
    return 0


def _check_data(args) -> int:
    from pathlib import Path

    from kerasmed.config import load_config
    from kerasmed.data.check import check_dataset, check_report_folder, default_check_dir

    config = load_config(args.config, args.overrides)
    out = Path(args.output) if args.output else default_check_dir(config)
    # Before any file is read: the report's own folder, never the data folder nor a user's.
    check_report_folder(out, config, "`--output` (the report folder)" if args.output else
                        "The report folder (default: <data.root>/check)")
    report = check_dataset(config, progress=not args.quiet)
    report.write(out)
    # Warnings (intensity settings that do not fit the data) are printed but fail nothing.
    # Each reader note (an assumption, e.g. a spacing of 0.000\\0.000) once, however many files.
    print("\n".join(report.lines() + report.note_lines() + report.warning_lines()
                    + [report.summary().to_string()]))
    warned = f", {len(report.warnings)} warning(s)" if report.warnings else ""
    if report.problems.empty:
        print(f"no problems in {len(report.cases)} cases{warned}; report: {out}")
        return 0
    print(f"{len(report.problems)} problem(s) in {report.skipped} of {len(report.cases)} cases"
          f"{warned}; report: {out}")
    return 1


def register_builtin(sub) -> None:
    p = sub.add_parser("generate", help="write the synthetic lung-CT dataset (DICOM + NIfTI)",
                       description="Generate seeded synthetic chest CT cases as DICOM series with "
                       "NIfTI nodule and lung masks, a manifest.csv and nodules.csv.")
    add_config_arguments(p)
    p.add_argument("--output", help="dataset folder (default: data.root of the config)")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing dataset")
    p.set_defaults(func=_generate)

    p = sub.add_parser("preprocess", help="build the config's preprocessed cache (resumable)",
                       description="Preprocess every case of the config's dataset into the cache "
                       "that training reads, in parallel. Finished cases are reused: an interrupted "
                       "run (even kill -9) started again builds only the rest; data replaced in "
                       "place, a changed spec or preprocessing code gets new entries.")
    add_config_arguments(p)
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="processes preprocessing cases at once (default: the CPUs this process "
                   "may use)")
    p.add_argument("--prune", action="store_true",
                   help="delete the cache entries of this preprocessing spec that the current "
                   "manifest does not use (e.g. of data replaced since)")
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="train the config's model",
                       description="Train with tf.data, a distribution strategy and Keras callbacks "
                       "(best checkpoint, CSV log, TensorBoard, early stopping). An interrupted run "
                       "(even kill -9) started again with the same command resumes from its last "
                       "completed epoch. With TF_CONFIG naming several workers, each process is one "
                       "worker of a MultiWorkerMirroredStrategy; --workers N starts N such workers "
                       "on this host. A worker waits for the others at most KERASMED_PEER_TIMEOUT "
                       "seconds (default 300), then names those that never started (exit code 2). "
                       "A loss or weight that becomes NaN or infinite (a learning rate too high) "
                       "stops training at once with one line and exit code 2; the run stays "
                       "unfinished (no model.keras), so evaluate and export refuse it.")
    add_config_arguments(p)
    p.add_argument("--run-dir", help="output folder (default: output_dir/name of the config)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train with N local worker processes (MultiWorkerMirroredStrategy on "
                   "localhost ports; worker 0 writes the run folder; sampling.batch_size is per "
                   "replica). At most one per usable CPU (2 always) and per GB of available "
                   "memory. Default: 1, in this process")
    p.add_argument("--overwrite", action="store_true",
                   help="train again from scratch into a run folder that holds a finished run "
                   "(its model is replaced, once the data has been read), or into a non-empty "
                   "folder that is no run. Without it such folders are refused")
    p.add_argument("--skip-bad", action="store_true",
                   help="check every case first (as `kerasmed check-data`, report in "
                   "<data.root>/check) and train on the cases without a problem, saying how many "
                   "were skipped. Without it the first bad case is an error")
    p.set_defaults(func=_train)

    p = sub.add_parser("check-data", help="read every case of the config's dataset; list every problem",
                       description="Read every case (image, mask, other *_path files) and list "
                       "every problem at once, one line each (<case>: <file>: <reason>): missing or "
                       "unreadable file, mask off the image grid, RGB where grey is needed, empty "
                       "mask of a train case, unknown label, repeated case or image, a patient in "
                       "two splits. Then a summary per split (cases, sizes, spacings, intensities, "
                       "class balance), and warnings where the config's intensity settings do "
                       "not fit the data (a HU window on non-CT data, z-score with a HU window). "
                       "Writes problems.csv, cases.csv, summary.md and histogram.png. Exit code 0: "
                       "no problem (warnings or not); 1: problems found; 2: the check could not "
                       "run (config, missing manifest).")
    add_config_arguments(p)
    p.add_argument("--output", help="report folder (default: <data.root>/check); absent, empty or "
                   "a report kerasmed made, never the data folder")
    p.set_defaults(func=_check_data)

    p = sub.add_parser("evaluate", help="score a run on a split with its task's metrics, baseline and plots",
                       description="Score a trained run on whole cases in the source geometry; "
                       "writes eval/metrics.csv, summary.json and PNG plots.")
    p.add_argument("run_dir", help="a finished training run folder")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: evaluation.split")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("explain", help="Grad-CAM and occlusion maps of a classifier on images",
                       description="Run a classifier run's model on image files (read and "
                       "preprocessed as in evaluation) and write a Grad-CAM overlay per image, an "
                       "occlusion-sensitivity overlay (a model-agnostic check) and explain.csv "
                       "with each map's peak.")
    p.add_argument("run_dir", help="a finished classification run folder")
    p.add_argument("images", nargs="+", help="image files (or DICOM series folders)")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last convolutional layer with "
                   "a spatial size over 1)")
    p.add_argument("--output", help="output folder (default: <run_dir>/explain); absent, empty or an "
                   "explanation kerasmed made")
    p.add_argument("--no-occlusion", action="store_true", help="Grad-CAM only")
    p.set_defaults(func=_explain)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2, like every
    other user error of the CLI (argparse prints the whole usage first); subcommands inherit it."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1. Received: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="kerasmed",
        description="Train medical-imaging models in Keras, export them to SavedModel, TFLite and "
        "ONNX, and prove each export gives the same answers.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_builtin(sub)
    for ep in sorted(entry_points(group="kerasmed.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def file_system_refusal(err: BaseException) -> StorageError | None:
    """`err` as a one-line `StorageError` when it is a write the file system refused outside
    `serving.atomic` (which names its target itself), else None.

    That is an `OSError` (or one raised from it) with ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, EPERM
    or ENOTDIR, or a TensorFlow error from its C++ file writers (SavedModel variables, event
    files), which carries no errno but ends "<path>; <strerror>" (e.g. "...; File too large").
    """
    if isinstance(err, OSError):
        return StorageError.from_os_error(err)
    if not type(err).__module__.startswith("tensorflow"):
        return None
    text = str(err)
    for code in REFUSALS:
        found = re.search(rf"(\S+); {re.escape(os.strerror(code))}", text)
        if found:
            return StorageError.from_os_error(OSError(code, os.strerror(code), found.group(1)))
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one `kerasmed` command and return its exit code.

    Exit codes: 0 success; 1 a check failed (`compare`: a parity tolerance; `check-data`: a
    problem in the data); 2 a user error, or a write the file system refused (no space left or
    a file-size limit, read-only, permission denied, a file where a folder must be), printed as
    one line on stderr naming the path and the reason; 130 interrupted by
    Ctrl-C (SIGINT) and 143 stopped by SIGTERM (128 + the signal number, what a shell reports for
    a process the signal killed). SIGTERM is handled like
    Ctrl-C: it raises KeyboardInterrupt wherever the command is, so every temp-then-rename writer
    (`serving.atomic`) deletes its temporary folder on the way out and leaves the previous output
    as it was. Further SIGTERMs are ignored while that cleanup runs (SIGKILL still stops it).
    """
    import signal
    import threading

    from kerasmed.worker_processes import die_with_launcher

    die_with_launcher()  # a worker of `train --workers N`: killed when its launcher dies
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    terminated = []

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        terminated.append(signum)
        raise KeyboardInterrupt

    # Signal handlers can only be installed from the main thread (not e.g. a test's worker thread).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        refused = err if isinstance(err, KerasmedError) else file_system_refusal(err)
        if refused is None:  # a bug: keep its traceback
            raise
        print(f"kerasmed {args.command}: error: {refused}".replace("\n", " "), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if terminated:
            print(f"kerasmed {args.command}: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"kerasmed {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:  # None: the old handler was not set from Python; keep ours
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
