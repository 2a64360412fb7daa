"""Write a model bundle: every artefact plus `manifest.json`, put in place atomically.

The bundle is built in a temporary sibling folder and renamed into place only once complete, so
a reader never sees a half-written bundle and a failed export leaves any previous bundle intact.
See `serving.bundle` for the layout and DESIGN.md "Bundle manifest" for the contract.

A bundle ships to other machines, so its manifest holds no absolute local path
(`refuse_absolute_paths`): where a path matters (the validation data, for `kerasmed compare`), it
is recorded relative to the bundle folder (`relative_location`).

The manifest is strict JSON with its own sha256 (`serving.bundle.manifest_text`), and the folder
carries a `.kerasmed` marker of kind `BUNDLE` (`serving.ownership`): `write_bundle` replaces only
a bundle folder kerasmed made (`serving.bundle.check_bundle_folder`), never a user's folder.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any

import keras

import kerasmed
from export.exporters.base_exporter import model_io
from export.exporters.registry import EXPORTERS, get_exporter
from kerasmed.models.float32 import as_float32
from serving.atomic import atomic_dir
from serving.bundle import MANIFEST_NAME, MANIFEST_VERSION, check_bundle_folder, manifest_text
from serving.errors import ConfigError
from serving.ownership import BUNDLE, write_marker
from serving.preprocessing import PreprocessSpec
from serving.tasks import runtime_task

DEFAULT_FORMATS = ("keras", "saved_model", "tflite", "onnx")
# POSIX root, home, UNC share or drive letter: what an absolute local path starts with.
_ABSOLUTE = re.compile(r"(/|~|\\\\|[A-Za-z]:[\\/])")
# Distribution names recorded in the manifest; onnxruntime ships as either of two.
_DISTRIBUTIONS = {
    "kerasmed": ("kerasmed",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "tf2onnx": ("tf2onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnx": ("onnx",),
    "ai-edge-litert": ("ai-edge-litert",),
    "numpy": ("numpy",),
}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape an export (None when not installed)."""
    versions: dict[str, str | None] = {}
    for label, dists in _DISTRIBUTIONS.items():
        versions[label] = None
        for dist in dists:
            try:
                versions[label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    if versions["kerasmed"] is None:  # running from a source tree
        versions["kerasmed"] = kerasmed.__version__
    return versions


def absolute_paths(value: Any, where: str = "") -> list[str]:
    """Where (`extra.data_root`) a JSON-ready value holds a string that looks like an absolute
    local path: starting with `/`, `~`, `\\\\` or a drive letter (`C:\\`, `C:/`)."""
    if isinstance(value, str):
        return [f"{where}={value!r}"] if _ABSOLUTE.match(value) else []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in absolute_paths(v, f"{where}.{k}".lstrip("."))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in absolute_paths(v, f"{where}[{i}]")]
    return []


def refuse_absolute_paths(manifest: dict[str, Any], what: str = MANIFEST_NAME) -> None:
    """Refuse a manifest that would carry an absolute local path to another machine.

    Raises:
        ConfigError: naming the first offending entries.
    """
    found = absolute_paths(manifest)
    if found:
        raise ConfigError(
            f"{what} must not hold absolute local paths (a bundle ships to other machines; record "
            f"paths relative to the bundle folder, e.g. with `relative_location`). "
            f"Received: {', '.join(found[:3])}{' and more' if len(found) > 3 else ''}"
        )


def relative_location(path: str | os.PathLike, bundle_dir: str | os.PathLike) -> str | None:
    """`path` relative to the bundle folder (POSIX, e.g. `../../../data`), or None when the two
    share no folder below the file system root (or drive), where a relative path would spell out
    the absolute one. Both are resolved (symlinks followed) first."""
    path, start = Path(path).resolve(), Path(bundle_dir).resolve()
    try:
        common = Path(os.path.commonpath([path, start]))
        relative = os.path.relpath(path, start)
    except ValueError:  # different drives
        return None
    if common == Path(common.anchor):
        return None
    return Path(relative).as_posix()


def _check_args(model, formats, task, class_names, postprocess) -> tuple[tuple[str, ...], dict, dict]:
    """The formats in export order, the task's output spec (which checks the class names and the
    post-processing) and the post-processing with the task's defaults filled in."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in EXPORTERS]
    if not formats or unknown or len(set(formats)) != len(formats):
        raise ConfigError(
            f"`formats` must be distinct names from {sorted(EXPORTERS)}. "
            f"Received: formats={formats}"
        )
    if len(model.outputs) != 1:
        raise ConfigError(f"The model must have one output. Received: {len(model.outputs)} outputs")
    threshold = postprocess.get("threshold", 0.5)
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise ConfigError(f"`postprocess['threshold']` must be in (0, 1). Received: {threshold!r}")
    runtime = runtime_task(task)
    postprocess = {**runtime.postprocess_defaults, **postprocess}
    output = runtime.output_spec(tuple(model.outputs[0].shape), class_names, postprocess)
    # tflite converts the saved_model written before it: keep the registry's order.
    return tuple(f for f in EXPORTERS if f in formats), output, postprocess


def _manifest(model, *, name, task, class_names, spec, postprocess, artefacts, extra, fingerprint,
              output):
    input_name, shape, output_name = model_io(model)
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "task": task,
        "class_names": list(class_names),
        "input": {
            "name": input_name,
            "layout": "NDHWC" if len(shape) == 5 else "NHWC",
            "dtype": "float32",
            "shape": list(shape),
            "units": "HU",
            "preprocessing": spec.to_dict(),
            **({"fingerprint": dict(fingerprint)} if fingerprint is not None else {}),
        },
        "output": {"name": output_name, "dtype": "float32", **output},
        "postprocessing": {
            **postprocess,
            "threshold": float(postprocess.get("threshold", 0.5)),
        },
        "artefacts": artefacts,
        "versions": library_versions(),
        "parity": {"verdict": "not_run"},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }


def without_compile_state(model: keras.Model) -> keras.Model:
    """The model without its training configuration (loss, metrics, optimizer).

    `model.keras` saved from a compiled model records its `compile_config`, and loading that file
    with Keras' default `compile=True` then needs the loss and metric classes registered (e.g.
    `kerasmed.losses.DiceCELoss`). A bundle is for inference, so its `model.keras` carries
    architecture and weights only and loads in any process that knows the model's layers.

    Args:
        model: a Keras model, compiled or not.

    Returns:
        `model` itself when it is not compiled; otherwise a rebuilt, uncompiled copy with the
        same layer names and weights.

    Raises:
        ConfigError: if the model cannot be rebuilt from its config.
    """
    if not getattr(model, "compiled", False):
        return model
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    try:
        clone = keras.saving.deserialize_keras_object(config)
        clone.set_weights(model.get_weights())
    except Exception as err:  # deserialisation raises many unrelated error types
        raise ConfigError(
            "A compiled model must be rebuildable from its config to export it without its "
            f"training state (register custom layers). Received: model={model.name!r}, "
            f"{type(err).__name__}: {err}"
        ) from err
    return clone


def write_bundle(
    model: keras.Model,
    out_dir: str | os.PathLike,
    *,
    name: str,
    task: str = "segmentation",
    class_names: list[str] | tuple[str, ...],
    preprocess_spec: PreprocessSpec,
    postprocess: dict[str, Any],
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    extra: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Export `model` to every format in `formats` and write the bundle folder.

    Args:
        model: trained Keras model, `image` `(N, H, W, 1)` raw HU -> `probs` `(N, H, W, C)`.
            A mixed-precision model is rebuilt in float32 first (`kerasmed.models.float32.as_float32`)
            and a compiled model without its training state (`without_compile_state`), so the
            bundle's `model.keras` loads without kerasmed's losses and metrics registered.
        out_dir: bundle folder. An existing bundle (`serving.bundle.check_bundle_folder`) is replaced only
            after the new one is complete.
        name: bundle name recorded in the manifest.
        task: a task registered in `serving.tasks.TASKS` ("segmentation", "classification"); it
            gives the manifest's `output` section and checks `class_names` against the output.
        class_names: for C=1 the foreground name (optionally preceded by the background name);
            for C>1 one name per channel.
        preprocess_spec: the preprocessing the model was trained with.
        postprocess: `{"threshold": float in (0, 1), "min_component_voxels": int >= 0, ...}`.
        formats: exporter names (see `export.exporters.registry.EXPORTERS`).
        extra: free-form facts stored under `extra` (training run, dataset, ...); no absolute
            local paths (see `relative_location`).
        fingerprint: the training set's `kerasmed.data.fingerprint.dataset_fingerprint`,
            recorded as `input.fingerprint` (numbers and lists of numbers); None records none.

    Returns:
        The bundle folder. Its manifest's parity verdict is "not_run" until
        `export.parity_report.write_parity_report` records one.

    Raises:
        ConfigError: on an invalid argument (including an absolute local path in `extra`), or if
            `out_dir` is an existing file or a non-empty folder that is not a bundle kerasmed made
            (`serving.bundle.check_bundle_folder`), lies under a file or inside another bundle, or cannot be
            written.
    """
    out_dir = Path(out_dir)
    formats, output, postprocess = _check_args(model, formats, task, class_names, postprocess)
    try:
        json.dumps(extra or {})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`extra` must be JSON-serialisable. Received: {err}") from err
    refuse_absolute_paths({"extra": extra or {}}, "`extra`")
    if not isinstance(preprocess_spec, PreprocessSpec):
        raise ConfigError(
            "`preprocess_spec` must be a PreprocessSpec. "
            f"Received: {type(preprocess_spec).__name__}"
        )
    check_bundle_folder(out_dir)
    model = without_compile_state(as_float32(model))
    with atomic_dir(out_dir) as tmp:
        artefacts = [get_exporter(fmt).export(model, tmp) for fmt in formats]
        manifest = _manifest(
            model,
            name=name,
            task=task,
            class_names=class_names,
            spec=preprocess_spec,
            postprocess=postprocess,
            artefacts=artefacts,
            extra=extra,
            fingerprint=fingerprint,
            output=output,
        )
        refuse_absolute_paths(manifest)
        (tmp / MANIFEST_NAME).write_text(manifest_text(manifest), encoding="utf-8")
        write_marker(tmp, BUNDLE, "kerasmed export")
    return out_dir
