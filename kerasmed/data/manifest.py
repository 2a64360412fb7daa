"""Dataset discovery from a CSV manifest: one row per case, paths relative to the dataset root."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from serving.errors import DataError

REQUIRED_COLUMNS = ("case_id", "image_path", "mask_path", "split")
SPLITS = ("train", "val", "test")


def read_manifest(root: str | Path, manifest: str = "manifest.csv") -> pd.DataFrame:
    """Read and check a dataset manifest.

    Args:
        root: dataset folder; relative paths in the manifest are resolved against it.
        manifest: CSV file name (or path relative to `root`).

    Returns:
        DataFrame with the manifest columns, paths made absolute.

    Raises:
        DataError: if the folder or manifest is missing, a column is missing, a split is unknown,
            case ids repeat, or a listed file does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"Data folder not found; run `kerasmed generate` or set `data.root`. Received: {root}"
        )
    path = root / manifest
    if not path.is_file():
        raise DataError(f"Manifest not found in the data folder. Received: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"Manifest {path} is not a readable CSV. Received: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"Manifest {path} must have columns {list(REQUIRED_COLUMNS)}. "
            f"Received: columns={list(df.columns)}"
        )
    if df.empty:
        raise DataError(f"Manifest {path} lists no cases. Received: 0 rows")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise DataError(f"Manifest {path}: `split` must be one of {SPLITS}. Received: {bad}")
    dup = df["case_id"][df["case_id"].duplicated()].tolist()
    if dup:
        raise DataError(f"Manifest {path}: case ids must be unique. Received duplicates: {dup[:5]}")
    for column in [c for c in df.columns if c.endswith("_path")]:
        df[column] = [str(root / p) if p else "" for p in df[column]]
        for case_id, p in zip(df["case_id"], df[column]):
            if p and not Path(p).exists():
                raise DataError(
                    f"Manifest {path}: `{column}` of case {case_id} does not exist. Received: {p}"
                )
    return df


def split_cases(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split; an empty split is an error naming the splits present."""
    rows = df[df["split"] == split]
    if rows.empty:
        raise DataError(
            f"The manifest has no `{split}` cases. Received splits: {sorted(set(df['split']))}"
        )
    return rows.reset_index(drop=True)
