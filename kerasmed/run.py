"""A training run folder: where `train` writes and `evaluate`/`export` read."""

from __future__ import annotations

import json
from pathlib import Path

from kerasmed.config import Config, load_config
from serving.errors import DataError


def load_run(run_dir: str | Path) -> tuple[Path, Config]:
    """The run folder and its config, checking that training finished.

    Raises:
        DataError: if the folder is not a run or training did not write `model.keras`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"Not a kerasmed run folder (no config.yaml). Received: {run_dir}")
    if not (run_dir / "model.keras").is_file():
        raise DataError(f"Run folder has no model.keras; training did not finish. Received: {run_dir}")
    return run_dir, load_config(run_dir / "config.yaml")


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None
