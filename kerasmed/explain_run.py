"""`kerasmed explain RUN_DIR IMAGES...`: Grad-CAM and occlusion maps of a trained classifier on
image files, through the same reading and preprocessing as evaluation and serving.

Writes `<run_dir>/explain/` (or `--output`): `gradcam_<name>.png`, `occlusion_<name>.png` and
`explain.csv` (see `kerasmed.explain.explain_images`). Names are the files' stems, made distinct.
The folder is the command's own (`check_explain_folder`, a `.kerasmed` marker): never a file, a
folder the user made, or a folder inside a model bundle.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmed.run import load_run
from kerasmed.tasks import training_task
from serving.atomic import atomic_dir
from serving.errors import ConfigError
from serving.io import read_image
from serving.ownership import EXPLAIN_REPORT, check_output_folder, holds_only, write_marker

# What `explain_images` writes (`kerasmed.explain.CSV_NAME` and the overlays).
REPORT_FILES = ("explain.csv", "gradcam_*.png", "occlusion_*.png")


def check_explain_folder(out_dir: str | Path, what: str = "`out_dir` (the explanation folder)") -> bool:
    """Refuse, before the model is read, an output folder `explain` may not write to: a file, a
    non-empty folder that is not an explanation kerasmed made (marked, or from a version before
    the marker: nothing but `explain.csv` and the overlays), or a folder inside a model bundle.

    Returns:
        True if an earlier explanation will be replaced.

    Raises:
        ConfigError: naming `what`, the folder and what was expected.
    """
    return check_output_folder(out_dir, what, EXPLAIN_REPORT, flag=None,
                               legacy=holds_only(REPORT_FILES, (REPORT_FILES[0],)))


def _names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name.split(".")[0]) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def explain_run(run_dir: str | Path, images: list[str | Path], out_dir: str | Path | None = None,
                layer: str | None = None, occlusion: bool = True, patch: int = 8, stride: int = 4,
                progress: bool = True) -> pd.DataFrame:
    """Explain a finished classifier run's predictions on `images` (file or folder paths).

    Raises:
        ConfigError: if the run is not a classifier, a layer name is unknown, or the output
            folder is not one `explain` may write (`check_explain_folder`).
        DataError: for an unreadable image or one the model cannot take.
    """
    from kerasmed.explain import explain_images
    from kerasmed.keras_runner import KerasRunner
    from kerasmed.tasks.classification import activation_of
    from kerasmed.tasks.classification_eval import run_contract

    run_dir, config = load_run(run_dir)
    out = Path(out_dir or run_dir / "explain")
    check_explain_folder(out)
    task = training_task(config.task)
    if not task.explains_class_scores:  # the maps explain a class score; a mask has none
        raise ConfigError(f"`kerasmed explain` explains classifiers. Received: a {config.task} run "
                          f"({run_dir})")
    runner = KerasRunner(run_dir / "model.keras")
    contract = run_contract(config, runner, {"threshold": config.evaluation.threshold,
                                             "activation": activation_of(config)})
    paths = [Path(p) for p in images]
    batch = np.concatenate([
        task.runtime.inputs(read_image(p, options=config.data.read), contract).batches[0]
        for p in paths])
    # Written whole into a temporary sibling and renamed over an earlier explanation folder, so a
    # failure (a full disk, Ctrl-C) leaves the earlier folder, or none, never half of a new one.
    with atomic_dir(out) as tmp:
        write_marker(tmp, EXPLAIN_REPORT, "kerasmed explain")
        return explain_images(runner.model, batch, _names(paths), tmp,
                              layer=layer, occlusion=occlusion, patch=patch, stride=stride,
                              window=tuple(config.model.hu_window), progress=progress)
