"""Dataset discovery from a CSV manifest: one row per case, paths relative to the dataset root."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from serving.errors import DataError
from serving.image import Image

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
            case ids repeat, an `image_path` or `mask_path` cell is empty, a path cell is not a
            valid path (e.g. a name too long for the file system), or a listed file does not
            exist.
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
    for column in REQUIRED_COLUMNS[1:3]:
        _require_cells(df, column, path)
    for column in [c for c in df.columns if c.endswith("_path")]:
        # An empty optional cell stays empty (never `root`, which a reader would open as a folder).
        df[column] = [str(root / p) if p.strip() else "" for p in df[column]]
        for i, (case_id, p) in enumerate(zip(df["case_id"], df[column])):
            try:
                exists = not p or Path(p).exists()
            except (OSError, ValueError) as err:  # e.g. a name over 255 bytes (errno 36)
                raise DataError(
                    f"Manifest {path}: `{column}` of case {case_id!r} (line {i + 2}) must be a "
                    f"valid file path. Received: a {len(p)}-character path {p[:80]!r}... "
                    f"({getattr(err, 'strerror', None) or err})"
                ) from err
            if not exists:
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


def _require_cells(df: pd.DataFrame, column: str, source: str | Path) -> None:
    empty = [i for i, cell in enumerate(df[column]) if not cell.strip()]
    if empty:
        i = empty[0]
        raise DataError(
            f"Manifest {source}: `{column}` must name a file in every row. Received: an empty "
            f"`{column}` cell for case {df['case_id'].iloc[i]!r} (line {i + 2})"
            + (f" and {len(empty) - 1} more row(s)" if len(empty) > 1 else "")
        )


def require_column(cases: pd.DataFrame, column: str, purpose: str) -> None:
    """Check that an optional manifest column is present and filled in every row of `cases`.

    Args:
        cases: rows from `read_manifest` (or `split_cases`).
        column: e.g. `lung_mask_path`.
        purpose: what needs it, for the message (e.g. "the HU-threshold baseline").

    Raises:
        DataError: naming the column, and the first case whose cell is empty.
    """
    if column not in cases.columns:
        raise DataError(
            f"The manifest needs a `{column}` column for {purpose}. "
            f"Received: columns={list(cases.columns)}"
        )
    empty = cases["case_id"][cases[column].str.strip() == ""].tolist()
    if empty:
        raise DataError(
            f"The manifest's `{column}` must name a file for every case ({purpose} needs it). "
            f"Received: an empty `{column}` cell for case(s) {empty[:5]}"
        )


def check_case_geometry(image: Image, other: Image, case_id: str, path: str | Path,
                        what: str = "Mask") -> None:
    """Check that a case's mask (or other label map) lies on its image's grid.

    Args:
        image: the case's image.
        other: the mask read from `path`.
        case_id: the case, for the message.
        path: the mask's file, for the message.
        what: what `other` is, for the message.

    Raises:
        DataError: if shape, spacing, origin or direction differ (spacing and origin by more than
            0.01 mm).
    """
    if not image.same_geometry(other, atol=1e-2):
        raise DataError(
            f"{what} of case {case_id} must share the image geometry. Received: image "
            f"shape={image.shape} spacing={image.spacing}, {what.lower()} shape={other.shape} "
            f"spacing={other.spacing} ({path})"
        )
