"""`kerasmed explain RUN_DIR IMAGES...`: Grad-CAM and occlusion maps of a trained classifier on
image files, through the same reading and preprocessing as evaluation and serving.

Writes `<run_dir>/explain/` (or `--output`): `gradcam_<name>.png`, `occlusion_<name>.png` and
`explain.csv` (see `kerasmed.explain.explain_images`). Names are the files' stems, made distinct.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from kerasmed.run import load_run
from kerasmed.tasks import training_task
from serving.errors import ConfigError
from serving.io import read_image


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
        ConfigError: if the run is not a classifier, or a layer name is unknown.
        DataError: for an unreadable image or one the model cannot take.
    """
    from kerasmed.explain import explain_images
    from kerasmed.keras_runner import KerasRunner
    from kerasmed.tasks.classification import activation_of
    from kerasmed.tasks.classification_eval import run_contract

    run_dir, config = load_run(run_dir)
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
    return explain_images(runner.model, batch, _names(paths), Path(out_dir or run_dir / "explain"),
                          layer=layer, occlusion=occlusion, patch=patch, stride=stride,
                          window=tuple(config.model.hu_window), progress=progress)
