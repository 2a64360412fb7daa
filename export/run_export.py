"""Glue between a training run, a bundle and the validation cases it is proven on.

What a bundle records about its run holds no absolute local path and no case id (a manifest's
case id may be a patient ID): `extra.data_root` is the data folder relative to the bundle folder
(`export.bundle_writer.relative_location`), so `kerasmed compare BUNDLE` finds the validation
cases while the bundle sits where it was exported (e.g. `runs/<name>/bundle` beside `data/`) and
asks for `--data` once it has been moved; the bundle's copy of the config has its local paths
(`data.root`, `data.cache_dir`, `output_dir`) set to null, and the training summary loses its
cache path. The parity report names cases by position (see `export.parity`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras

import kerasmed.layers.hu_window  # noqa: F401 - registers HUWindow for load_model
from export.bundle_writer import relative_location, write_bundle
from export.parity import ParityResult, Tolerances, run_parity
from export.parity_report import write_parity_report
from export.parity_result import check_report_folder
from kerasmed.config import Config, config_from_dict
from kerasmed.data.manifest import read_manifest, split_cases
from kerasmed.run import check_keras_archive, load_run, read_json
from kerasmed.tasks import training_task
from serving.bundle import data_manifest_path, load_bundle
from serving.errors import ConfigError, DataError
from serving.io import read_image


def load_run_model(path: str | Path) -> keras.Model:
    """Load a run's `model.keras` for export: architecture and weights, no compiled state.

    Export never needs the loss, metrics or optimizer, and loading them would require their
    classes (e.g. `kerasmed.losses.DiceCELoss`) to be registered in this process, which a fresh
    `kerasmed export` process does not do. So the model is loaded with `compile=False`.

    Raises:
        DataError: if the file is not a readable .keras archive, or Keras cannot load it.
    """
    path = Path(path)
    check_keras_archive(path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many unrelated error types here
        raise DataError(
            f"Keras could not load the run's model file. Received: path={str(path)!r}, "
            f"{type(err).__name__}: {err}"
        ) from err


# Local paths in a run's config: meaningless on another machine, left out of the bundle's copy.
_LOCAL_CONFIG_PATHS = (("data", "root"), ("data", "cache_dir"), ("output_dir",))


def _portable_config(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    for *parents, key in _LOCAL_CONFIG_PATHS:
        section = config
        for name in parents:
            section = section.get(name) or {}
        if key in section:
            section[key] = None
    return config


def _portable_summary(summary: dict | None) -> dict | None:
    """The training summary without its cache path, devices without TensorFlow's `/device:`."""
    if summary is None:
        return None
    out = {k: v for k, v in summary.items() if k != "cache"}
    if isinstance(out.get("devices"), list):
        out["devices"] = [str(d).rsplit("device:", 1)[-1] for d in out["devices"]]
    return out


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, formats=None) -> Path:
    """Write the bundle of a finished run (default `<run_dir>/bundle`).

    The manifest's `extra` records where the validation cases are, relative to the bundle folder,
    so that `compare` finds them while the bundle stays where it was exported (see the module
    docstring); no absolute local path is recorded. The run's `fingerprint.json`, if any, becomes
    `input.fingerprint`.
    """
    run_dir, config = load_run(run_dir)
    task = training_task(config.task)
    model = load_run_model(run_dir / "model.keras")
    kwargs = {"formats": tuple(formats)} if formats else {}
    bundle_dir = Path(out_dir) if out_dir else run_dir / "bundle"
    manifest = config.data.manifest
    return write_bundle(
        task.export_model(model, config, run_dir),
        bundle_dir,
        name=config.name,
        task=config.task,
        **task.export_arguments(config, run_dir),
        preprocess_spec=config.preprocessing.spec(),
        extra={
            "data_root": relative_location(config.data.root, bundle_dir),
            "manifest": None if Path(manifest).is_absolute() else manifest,
            "validation_split": config.evaluation.split,
            "train_summary": _portable_summary(read_json(run_dir / "train_summary.json")),
            "evaluation": read_json(run_dir / "eval" / "summary.json"),
            "config": _portable_config(config.to_dict()),
        },
        # A run trained before the fingerprint existed has none, and exports without it.
        fingerprint=read_json(run_dir / "fingerprint.json"),
        **kwargs,
    )


def _recorded_config(bundle_dir: str | Path, extra: dict, task: str) -> Config:
    """The parts of the run's config that reading its validation cases needs: the task, the
    model's class names, and the data section's manifest format, column names, split rule and
    reader options, as the bundle's config records them.

    Raises:
        ConfigError: if the recorded sections are not valid ones.
    """
    config = extra.get("config")
    config = config if isinstance(config, dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    keep = {k: v for k, v in data.items() if k in ("format", "columns", "split", "read")}
    raw = {"task": task, "data": keep,
           **({"model": {k: model[k] for k in ("class_names", "num_classes") if k in model}}
              if "class_names" in model else {})}
    return config_from_dict(raw, source=f"The config recorded in bundle {bundle_dir}")


def recorded_data_root(bundle, bundle_dir: str | Path, manifest: str | None = "manifest.csv") -> Path:
    """The validation data folder a bundle records: `extra.data_root`, relative to the bundle
    folder (an absolute path, as bundles before this rule recorded, is taken as it is).

    Raises:
        DataError: if the bundle records none, or the folder it names (the bundle was moved, or
            the data) holds no `manifest`; both say to pass `--data`.
    """
    recorded = (bundle.manifest.get("extra") or {}).get("data_root")
    if not recorded:
        raise DataError(
            f"Bundle {bundle_dir} does not record its validation data; pass --data. Received: none"
        )
    root = Path(recorded)
    if not root.is_absolute():
        # The bundle's own path resolved (no symlinks left), `..` may be applied lexically.
        root = Path(os.path.normpath(Path(bundle.path).resolve() / root))
    # `manifest` None: an ImageFolder tree, whose root is the dataset.
    if not ((root / manifest).is_file() if manifest else root.is_dir()):
        what = manifest or "ImageFolder tree"
        raise DataError(
            f"Bundle {bundle_dir} records its validation data at `{recorded}` relative to the "
            f"bundle folder, which holds no {what} there (was the bundle or the data moved?); "
            f"pass --data. Received: {root}"
        )
    return root


def _check_max_cases(max_cases: int | None) -> None:
    if max_cases is not None and (isinstance(max_cases, bool) or not isinstance(max_cases, int)
                                  or max_cases < 1):
        raise ConfigError(f"`max_cases` must be an integer >= 1 or None. Received: {max_cases!r}")


def compare_bundle(
    bundle_dir: str | Path,
    data_root: str | Path | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    formats=None,
    max_cases: int | None = None,
    tolerances: Tolerances | None = None,
    progress: bool = True,
    min_foreground_cases: int = 1,
    use_tf32: bool = False,
) -> tuple[ParityResult, Path]:
    """Run parity of every artefact of a bundle on real validation cases and write the report.

    `tolerances`, `min_foreground_cases` and `use_tf32` are those of `export.parity.run_parity`.

    A check of fewer artefacts (`formats`) or fewer cases (`max_cases`) than the bundle and split
    hold is narrower than the certificate `kerasmed export` + `compare` record: it writes its own
    report (default `<bundle>/parity_narrower`), states its scope there, and leaves the
    manifest's recorded verdict untouched. Only a full check records a verdict.

    Returns:
        `(result, report_folder)`; the report folder defaults to `<bundle>/parity`.

    Raises:
        ConfigError: if `max_cases` is not a positive integer, or `out_dir` is not a report folder
            `compare` may write (`export.parity_result.check_report_folder`: a file, a user's
            folder, a folder inside a bundle); both are checked before any work.
        BundleError: if the bundle records a data manifest path (`extra.manifest`) that is not
            contained in the data folder.
    """
    _check_max_cases(max_cases)
    if out_dir is not None:
        check_report_folder(out_dir, bundle_dir)
    bundle = load_bundle(bundle_dir)
    extra = bundle.manifest.get("extra") or {}
    manifest = extra.get("manifest") or "manifest.csv"
    split = split or extra.get("validation_split", "val")
    # The split's rows are read once: they give the cases checked and the split's size (the scope).
    config = _recorded_config(bundle_dir, extra, bundle.task)
    data = config.data
    root = data_root or recorded_data_root(bundle, bundle_dir,
                                           None if data.format == "imagefolder" else manifest)
    data_manifest_path(root, manifest)  # contained in the data folder before it is opened
    rows = split_cases(read_manifest(root, manifest, data), split)
    task = training_task(bundle.task)
    cases = [(r.case_id, read_image(r.image_path, options=data.read), task.parity_truth(r, config))
             for r in (rows.head(max_cases) if max_cases else rows).itertuples()]
    result = run_parity(
        bundle, cases, tolerances=tolerances, formats=formats, progress=progress,
        min_foreground_cases=min_foreground_cases, use_tf32=use_tf32,
    )
    result.scope = {
        "split": split,
        "split_cases": len(rows),
        "bundle_artefacts": [k for k in bundle.artefact_keys if k != result.reference],
    }
    full = not result.narrower
    default = bundle.path / ("parity" if full else "parity_narrower")
    report = write_parity_report(result, Path(out_dir) if out_dir else default, bundle,
                                 update_manifest=full)
    return result, report
