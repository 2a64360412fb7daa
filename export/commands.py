"""`kerasmed export`, `kerasmed compare` and `kerasmed demo`, contributed to the kerasmed CLI.

They are registered through the `kerasmed.commands` entry-point group (see pyproject.toml), so the
CLI in `kerasmed` reaches them without importing `export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasmed.cli import positive_int

EXIT_PARITY_FAILED = 1


def _export(args) -> int:
    from kerasmed.cli import import_tensorflow
    from kerasmed.run import load_run
    from serving.bundle import check_bundle_folder

    # Before the model is read or TensorFlow loads: the folder must be absent, empty or a bundle
    # kerasmed made (never a user's folder, e.g. one that merely holds a `manifest.json`).
    if args.output is not None:
        check_bundle_folder(args.output, "`--output` (the bundle folder)")
    run_dir, _ = load_run(args.run_dir)
    if args.output is None:
        check_bundle_folder(run_dir / "bundle", "The bundle folder (default: RUN_DIR/bundle)")
    import_tensorflow()
    from export.run_export import export_run

    bundle = export_run(args.run_dir, args.output, args.formats)
    print(f"bundle: {bundle}")
    return 0


def _compare(args) -> int:
    from export.parity_result import check_report_folder
    from kerasmed.cli import import_tensorflow
    from serving.bundle import load_bundle

    # Before the bundle is read or any artefact is run: compare's own report folder, never a
    # user's folder nor a folder inside a bundle other than BUNDLE/parity*.
    if args.output is not None:
        check_report_folder(args.output, args.bundle, "`--output` (the report folder)")
    else:  # the default report goes inside the bundle: a read-only one fails now, not after the run
        from serving.ownership import check_writable_folder

        check_writable_folder(args.bundle, "The bundle folder (`compare` writes its report in "
                              "BUNDLE/parity unless --output is given)")
    load_bundle(args.bundle)
    import_tensorflow()
    from export.parity_report import format_table
    from export.run_export import compare_bundle

    result, report = compare_bundle(
        args.bundle, data_root=args.data, split=args.split, out_dir=args.output,
        formats=args.formats, max_cases=args.max_cases, progress=not args.quiet,
    )
    print(format_table(result))
    if result.narrower:
        print(f"narrower check ({', '.join(result.narrower)}): the bundle's recorded certificate "
              "was left unchanged")
    print(f"parity: {'PASS' if result.passed else 'FAIL'}  report: {report}")
    return 0 if result.passed else EXIT_PARITY_FAILED


DEMO_CONFIG = "configs/lung_nodule_seg_2d.yaml"


def _demo(args) -> int:
    from export.demo import prepare_demo
    from kerasmed.cli import import_tensorflow
    from kerasmed.config import shipped_config

    if args.config is None:
        # The repository's config when run from its root (where `make demo` runs), else the
        # copy shipped with kerasmed, so that `kerasmed demo` works from any folder.
        args.config = DEMO_CONFIG if Path(DEMO_CONFIG).is_file() else str(
            shipped_config(Path(DEMO_CONFIG).name))
    # Every check (config, work folder, the folders it would replace) before TensorFlow loads.
    prepare_demo(args.workdir, args.config, args.profile, args.overrides, args.overwrite)
    import_tensorflow()
    from export.demo import run_demo

    return run_demo(args.workdir, args.config, profile=args.profile, progress=not args.quiet,
                    overrides=args.overrides, overwrite=args.overwrite)


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained run to a bundle (Keras, SavedModel, TFLite, ONNX)",
        description="Write model.keras, saved_model/, model.tflite, model.onnx and manifest.json "
        "(with a sha256 per artefact). Mixed-precision models are exported in float32.",
    )
    p.add_argument("run_dir", help="a finished training run folder (holds model.keras)")
    p.add_argument("--output", help="bundle folder (default: RUN_DIR/bundle); replaced only if "
                   "absent, empty or a bundle kerasmed made")
    p.add_argument("--formats", nargs="+", metavar="FORMAT",
                   help="exporters to run (default: keras saved_model tflite onnx)")
    p.set_defaults(func=_export)


def register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="prove each artefact of a bundle matches Keras on validation cases",
        description="Run Keras, SavedModel, TFLite (LiteRT) and ONNX (onnxruntime) on the "
        "validation cases; report max/mean abs error, NaN/Inf counts and Dice agreement; write "
        "parity.json, parity.md and parity.png. Exit code 1 when a tolerance fails.",
    )
    p.add_argument("bundle", help="bundle folder written by `kerasmed export`")
    p.add_argument("--data", help="dataset folder (default: the one recorded in the bundle)")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: the bundle's validation split")
    p.add_argument("--output", help="report folder (default: BUNDLE/parity, or BUNDLE/parity_narrower "
                   "for a check of fewer artefacts or cases); absent, empty or a parity report "
                   "kerasmed made, and never elsewhere inside a bundle")
    p.add_argument("--formats", nargs="+", metavar="ARTEFACT", help="artefacts to check (default: all)")
    p.add_argument("--max-cases", type=positive_int, metavar="N",
                   help="check only the first N cases (a narrower check: the recorded certificate is kept)")
    p.set_defaults(func=_compare)


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="generate data, train, evaluate, export and compare, end to end",
        description="The main job on built-in synthetic lung CT: generate a dataset, train the "
        "U-Net (fast profile), evaluate against the HU-threshold baseline, export the bundle, "
        "check parity, and print one summary table.",
    )
    p.add_argument("--workdir", default="demo_out", help="where data, run and report go (default: demo_out)")
    p.add_argument("--config", help=f"experiment config (default: {DEMO_CONFIG} in the current "
                   "folder if it exists, else the same config shipped with kerasmed)")
    p.add_argument("--profile", choices=("fast", "full", "tiny"), default="fast",
                   help="fast: a few minutes on a laptop CPU; full: the config as written; tiny: smoke test")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value after the profile, "
                   "e.g. --set training.mixed_precision=float32")
    p.add_argument("--overwrite", action="store_true",
                   help="replace WORKDIR/data, WORKDIR/runs/NAME and WORKDIR/report even if an "
                   "earlier demo did not make them (without it, only the demo's own folders, "
                   "marked by a .kerasmed file, are replaced)")
    p.set_defaults(func=_demo)
