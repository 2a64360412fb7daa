"""A training run folder: where `train` writes and `evaluate`/`export` read."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from kerasmed.config import Config, load_config
from serving.errors import ConfigError, DataError, KerasmedError
from serving.ownership import MARKER, check_writable_folder, describe_entries, user_entries

BACKUP = "backup"  # an unfinished run's last completed epoch, which a restart resumes from
BACKUP_METADATA = "training_metadata.json"  # written last: a backup without it is not committed
FINISHED = ("model.keras", "train_summary.json")  # what a finished run holds
# How both the CLI and Python callers ask to train again into a finished run.
OVERWRITE_FLAG = "`kerasmed train --overwrite` (Python: `train(config, overwrite=True)`)"


def load_run(run_dir: str | Path) -> tuple[Path, Config]:
    """The run folder and its config, checking that training finished.

    Raises:
        DataError: if the folder is not a run, training did not write `model.keras`, or that file
            is not a readable .keras archive, or holds NaN or infinite weights (a diverged run
            that an earlier kerasmed saved).
        ConfigError: if the run's `config.yaml` is unreadable or invalid.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"Not a kerasmed run folder (no config.yaml). Received: {run_dir}")
    if not (run_dir / "model.keras").is_file():
        raise DataError(f"Run folder has no model.keras; training did not finish. Received: {run_dir}")
    check_keras_archive(run_dir / "model.keras")
    config = load_config(run_dir / "config.yaml")
    found = nonfinite_archive_weights(run_dir / "model.keras")
    if found:
        raise DataError(
            f"`{run_dir / 'model.keras'}` must hold finite weights; its training diverged, so it is "
            f"no usable model: train it again with a lower `training.learning_rate` "
            f"({OVERWRITE_FLAG}). Received: {describe_nonfinite(found)}"
        )
    return run_dir, config


def describe_nonfinite(found: list[tuple[str, int, int]]) -> str:
    """"NaN or inf in A weight arrays (B of C values), e.g. `name`" for `(name, bad, size)` rows."""
    bad, size = sum(n for _, n, _ in found), sum(s for _, _, s in found)
    return (f"NaN or inf in {len(found)} weight array{'s' if len(found) > 1 else ''} ({bad} of "
            f"{size} values), e.g. `{found[0][0]}`")


def nonfinite_archive_weights(path: str | Path) -> list[tuple[str, int, int]]:
    """The model weights of a `.keras` archive that hold NaN or inf, read without TensorFlow.

    The optimizer's state is left out: it is no part of the model that `evaluate` and `export`
    use.

    Returns:
        `(array path in model.weights.h5, non-finite values, values)` per such array; empty for a
        healthy model (or an archive without `model.weights.h5`).

    Raises:
        DataError: if the archive's weights cannot be read (a damaged member).
    """
    import io

    import h5py
    import numpy as np

    try:
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                return []
            data = io.BytesIO(archive.read("model.weights.h5"))
    except (OSError, zipfile.BadZipFile) as err:  # a damaged member fails its CRC check
        raise DataError(f"`{path}` must be a readable .keras archive; it is corrupt. "
                        f"Received: {type(err).__name__}: {err}") from err
    found = []

    def visit(name, item):
        if not isinstance(item, h5py.Dataset) or name.startswith("optimizer") or item.dtype.kind != "f":
            return
        values = item[()]
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            found.append((name, bad, int(np.size(values))))

    try:
        with h5py.File(data, "r") as weights:
            weights.visititems(visit)
    except OSError as err:
        raise DataError(f"`{path}` must hold readable weights (model.weights.h5); it is corrupt. "
                        f"Received: {err}") from err
    return found


def check_keras_archive(path: str | Path, error: type[KerasmedError] = DataError) -> None:
    """Check, without TensorFlow, that `path` is a complete `.keras` archive (a zip file).

    Keras reports a truncated or corrupt archive as "File not found", which is misleading for
    a file that exists.

    Args:
        path: a `.keras` file that exists.
        error: the error type to raise (`BundleError` for a bundle's model).

    Raises:
        error: if the file cannot be read, or is not a zip archive (truncated or corrupt).
    """
    path = Path(path)
    try:
        ok = zipfile.is_zipfile(path)
        size = path.stat().st_size
    except OSError as err:
        raise error(f"`{path}` must be a readable .keras archive. Received: {err}") from err
    if not ok:
        raise error(
            f"`{path}` must be a readable .keras archive (a zip file); it is truncated or corrupt. "
            f"Received: a {size}-byte file that is not a zip archive"
        )


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def has_backup(run_dir: str | Path) -> bool:
    """Whether the run folder holds a committed backup, i.e. an unfinished run to resume."""
    return (Path(run_dir) / BACKUP / BACKUP_METADATA).is_file()


def check_run_dir(run_dir: str | Path, overwrite: bool = False) -> bool:
    """Check, before anything is read or written, that training may write into `run_dir`.

    Allowed: a new or empty folder, an unfinished run (with or without a backup to resume), and,
    with `overwrite`, anything that is a folder. A finished run (`model.keras` or
    `train_summary.json` and no backup) would lose its model, and a non-empty folder that is no
    run (no `.kerasmed` marker, `config.yaml` or backup) would have its files overwritten.

    Returns:
        True if `run_dir` holds a finished run that training will replace.

    Raises:
        ConfigError: if `run_dir` is a file or not writable, or holds a finished run or files
            of a non-run and `overwrite` is False.
    """
    run_dir = Path(run_dir)
    check_writable_folder(run_dir, "The run folder")
    entries = user_entries(run_dir)
    if not entries or has_backup(run_dir):
        return False
    finished = [name for name in FINISHED if name in entries]
    if finished and not overwrite:
        raise ConfigError(
            f"The run folder must not hold a finished run, which training would replace; pass "
            f"{OVERWRITE_FLAG} to train it again from scratch, or choose another run folder. "
            f"Received: {run_dir} holding {' and '.join(finished)}"
        )
    looks_like_run = (run_dir / MARKER).is_file() or "config.yaml" in entries or BACKUP in entries
    if not looks_like_run and not overwrite:
        raise ConfigError(
            f"The run folder must be new, empty or a kerasmed run folder (it has no {MARKER} "
            f"marker, config.yaml or backup), since training writes config.yaml, checkpoints/ and "
            f"logs into it; pass {OVERWRITE_FLAG} to write into it anyway. Received: {run_dir} "
            f"holding {describe_entries(entries)}"
        )
    return bool(finished)
