"""Dataset discovery: a CSV manifest or an ImageFolder tree, read into one table of cases.

The table has canonical columns, whatever the manifest calls them (`data.columns` of the config):

    case_id, image_path     always
    mask_path               when `data.columns.mask` is set (a segmentation dataset)
    split                   the manifest's, else a seeded split (below)
    patient_id              when the manifest has one
    label                   when `data.columns.label` is set, and for an ImageFolder tree
    <finding>               multi-label: each column of `data.columns.findings`, "0" or "1"
    <other>_path            every other `*_path` column (e.g. `lung_mask_path`): optional
                            everywhere, an empty cell stays ""

Paths in a CSV are relative to the CSV's folder and come back absolute. An ImageFolder tree is
`root/<class>/<image>`: one case per non-hidden entry of a class folder (a file, or a folder
holding a DICOM series), the case id its path relative to `root`, the label its folder's name; the
folders kerasmed writes into `data.root` (`RESERVED_FOLDERS`) are no class.

A manifest without a split column (and every ImageFolder tree) is split by `seeded_split`: by
patient when there is a `patient_id`, so that no patient is in two splits. A manifest that has
both columns must keep each patient in one split.

`manifest_problems` lists every problem of the table, one per row, each naming the case, the file
and the rule: `read_manifest` raises the first; `kerasmed.data.check` lists them all and reads
every file as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from serving.errors import DataError
from serving.image import Image

if TYPE_CHECKING:  # the cache's worker processes import this module: keep pydantic out of it
    from kerasmed.config import Config, DataConfig

REQUIRED_COLUMNS = ("case_id", "image_path", "mask_path", "split")
_CANONICAL = ("case_id", "image_path", "mask_path", "split", "patient_id", "label")
SPLITS = ("train", "val", "test")
# Folders kerasmed writes into `data.root` (the cache, `kerasmed check-data`'s report).
RESERVED_FOLDERS = ("cache", "check")


@dataclass(frozen=True)
class Problem:
    """One problem of one case: its id, the file concerned (or the manifest), the rule broken,
    and the case's row in the table (0-based; a repeated case id has several)."""

    case_id: str
    file: str
    reason: str
    row: int


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset before its rows are checked.

    Attributes:
        cases: the canonical table, index 0..n-1 (a CSV's row i is its line i + 2).
        source: the CSV file, or the ImageFolder root.
        names: canonical column -> the source's name, for messages.
        class_names: the known label names in order (`model.class_names` when set in the config,
            the sorted class folders of an ImageFolder tree), else None.
        seeded: whether the split was drawn by `seeded_split`.
        tree: whether it is an ImageFolder tree (its rows have no line numbers).
    """

    cases: pd.DataFrame
    source: Path
    names: dict[str, str]
    class_names: tuple[str, ...] | None
    seeded: bool
    tree: bool = False

    @property
    def prefix(self) -> str:
        return f"{'ImageFolder' if self.tree else 'Manifest'} {self.source}: "

    def line(self, i: int) -> str:
        return "" if self.tree else f" (line {i + 2})"


def read_manifest(root: str | Path, manifest: str = "manifest.csv", data: DataConfig | None = None,
                  class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and check a dataset: the table of `discover_dataset`, refusing its first problem.

    Args:
        root: dataset folder (`data.root`).
        manifest: CSV file name, relative to `root` (unused for an ImageFolder tree).
        data: the config's `data` section (format, column names, split rule); default: the
            fixed columns `case_id,image_path,mask_path,split`.
        class_names: the labels a `label` column may hold, in order (None: any).

    Returns:
        The canonical table (see the module docstring), paths absolute, index 0..n-1.

    Raises:
        DataError: if the folder, manifest or a configured column is missing, there is no case,
            or a row has a problem (`manifest_problems`): the first is named, with the count of
            the others.
    """
    dataset = discover_dataset(root, manifest, data, class_names)
    problems = manifest_problems(dataset)
    if problems:
        more = len(problems) - 1
        raise DataError(dataset.prefix + problems[0].reason + (
            f"; and {more} more problem(s), listed by `kerasmed check-data`" if more else ""))
    return dataset.cases


def configured_class_names(config: Config) -> tuple[str, ...] | None:
    """`model.class_names` when the config sets it, else None (labels are then not checked)."""
    return config.model.class_names if "class_names" in config.model.model_fields_set else None


def dataset_manifest(config: Config) -> pd.DataFrame:
    """`read_manifest` of the config's dataset (`data` section and `model.class_names`)."""
    d = config.data
    return read_manifest(d.root, d.manifest, d, configured_class_names(config))


def discover_dataset(root: str | Path, manifest: str = "manifest.csv", data: DataConfig | None = None,
                     class_names: Sequence[str] | None = None) -> Dataset:
    """Find a dataset's cases without checking its rows (see `read_manifest` for the arguments).

    Raises:
        DataError: if the folder or manifest is missing or unreadable, a configured column is
            missing, or there is no case.
    """
    from kerasmed.config import DataConfig

    root = Path(root)
    data = data or DataConfig()
    class_names = tuple(class_names) if class_names is not None else None
    if not root.is_dir():
        raise DataError(
            f"Data folder not found; run `kerasmed generate` or set `data.root`. Received: {root}"
        )
    if data.format == "imagefolder":
        return _image_folder(root, data, class_names)
    path = root / manifest
    if not path.is_file():
        raise DataError(f"Manifest not found in the data folder. Received: {path}")
    try:
        # A row longer than the header makes pandas take the first cells as the index: number
        # the rows by position, as the lines of the file.
        df = pd.read_csv(path, dtype=str, keep_default_na=False).reset_index(drop=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"Manifest {path} is not a readable CSV. Received: {err}") from err
    c = data.columns
    names = {"case_id": c.case_id, "image_path": c.image, "mask_path": c.mask, "split": c.split,
             "patient_id": c.patient_id, "label": c.label}
    # `split` and `patient_id` are optional at their default names (whether written in the config
    # or not: a run's saved config spells out every default); another name, and every other
    # configured column, must be there.
    defaults = type(c)()
    optional = {k for k in ("split", "patient_id") if getattr(c, k) == getattr(defaults, k)}
    required = [s for k, s in names.items() if s is not None and k not in optional]
    required += list(c.findings or ())
    missing = [s for s in required if s not in df.columns]
    if missing:
        raise DataError(
            f"Manifest {path} must have columns {required} (`data.columns`). "
            f"Received: columns={list(df.columns)}"
        )
    if df.empty:
        raise DataError(f"Manifest {path} lists no cases. Received: 0 rows")
    names = {k: s for k, s in names.items() if s is not None and s in df.columns}
    names.update({f: f for f in c.findings or ()})
    cases = pd.DataFrame({k: df[s] for k, s in names.items()}, index=df.index)
    for column in df.columns:
        # A column under a canonical name that the config maps elsewhere (or to null) is not
        # taken for it: `columns.mask: null` means no mask, whatever the CSV holds.
        if (column.endswith("_path") and column not in names.values()
                and column not in ("image_path", "mask_path")):
            cases[column] = df[column]
            names[column] = column
    for column in [k for k in cases if k.endswith("_path")]:
        # An empty optional cell stays empty (never the folder, which a reader would open as a
        # DICOM series); an absolute path stays as it is.
        cases[column] = [str(path.parent / p) if p.strip() else "" for p in cases[column]]
    seeded = "split" not in cases
    if seeded:
        cases["split"] = seeded_split(_groups(cases), data.split.fractions, data.split.seed)
    order = [k for k in ("case_id", "image_path", "mask_path", "split", "patient_id", "label")
             if k in cases]
    cases = cases[order + [k for k in cases if k not in order]]
    return Dataset(cases, path, names, class_names, seeded)


def _image_folder(root: Path, data: DataConfig, class_names: tuple[str, ...] | None) -> Dataset:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in RESERVED_FOLDERS)
    if not folders:
        raise DataError(
            f"An ImageFolder tree (`data.format: imagefolder`) must hold one folder per class in "
            f"`data.root`. Received: no class folder in {root}"
        )
    order = class_names or tuple(p.name for p in folders)
    rank = {name: i for i, name in enumerate(order)}
    rows = [
        {"case_id": entry.relative_to(root).as_posix(), "image_path": str(entry), "label": folder.name}
        for folder in sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), p.name))
        for entry in sorted(folder.iterdir()) if not entry.name.startswith(".")
    ]
    if not rows:
        raise DataError(
            f"An ImageFolder tree must hold at least one image in its class folders. Received: "
            f"{len(folders)} empty class folder(s) in {root}"
        )
    cases = pd.DataFrame(rows)
    cases.insert(2, "split", seeded_split(cases["case_id"].tolist(), data.split.fractions,
                                          data.split.seed))
    names = {k: k for k in cases}
    return Dataset(cases, root, names, order, seeded=True, tree=True)


def _groups(cases: pd.DataFrame) -> list[str]:
    """The unit a split keeps together: the patient when known, else the case."""
    if "patient_id" not in cases:
        return cases["case_id"].tolist()
    return [f"patient:{p}" if p.strip() else f"case:{c}"
            for p, c in zip(cases["patient_id"], cases["case_id"])]


def split_counts(groups: int, fractions: Sequence[float]) -> list[int]:
    """Groups per split (train, val, test): rounded shares by largest remainder, then every split
    with a positive share gets at least one group when there are enough groups."""
    raw = np.asarray(fractions, float) * groups
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: groups - int(counts.sum())]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if groups >= len(positive):
        for i in positive:
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return counts.tolist()


def seeded_split(groups: Sequence[str], fractions: Sequence[float], seed: int) -> list[str]:
    """A split per row that keeps each group (patient) in one split.

    Deterministic: the same groups, fractions and seed give the same split in any row order (the
    groups are sorted before the seeded shuffle).

    Args:
        groups: one group name per row.
        fractions: train, val, test shares of the groups (`split_counts`).
        seed: the shuffle's seed.

    Returns:
        One of `SPLITS` per row.
    """
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    split_of, start = {}, 0
    for split, n in zip(SPLITS, split_counts(len(unique), fractions)):
        split_of.update({unique[i]: split for i in order[start : start + n]})
        start += n
    return [split_of[g] for g in groups]


def manifest_problems(dataset: Dataset) -> list[Problem]:
    """Every problem of the table's rows, without reading a file, in this order: unknown split,
    empty or repeated case id, empty required path, invalid or missing file, an image used by two
    cases, unknown or empty label, a patient in two splits. A row may have several."""
    cases, names, source = dataset.cases, dataset.names, str(dataset.source)
    ids = cases["case_id"].tolist()
    found: list[Problem] = []

    def add(i, file, reason):
        found.append(Problem(ids[i], file, reason, i))

    rows = range(len(cases))
    lines = [dataset.line(i) for i in rows]
    if not dataset.seeded:
        for i, split in enumerate(cases["split"]):
            if split not in SPLITS:
                add(i, source, f"`{names['split']}` must be one of {SPLITS}. Received: {split!r} "
                               f"for case {ids[i]!r}{lines[i]}")
    first: dict[str, int] = {}
    for i, case_id in enumerate(ids):
        if not case_id.strip():
            add(i, source, f"`{names['case_id']}` must name the case in every row. Received: an "
                           f"empty cell{lines[i]}")
        elif case_id in first:  # only a CSV can repeat one: a tree's paths are unique
            add(i, source, f"case ids must be unique (column `{names['case_id']}`). Received: "
                           f"{case_id!r}{lines[i]}, first{lines[first[case_id]]}")
        else:
            first[case_id] = i
    for column in ("image_path", "mask_path"):
        for i in rows if column in cases else ():
            if not cases[column].iat[i]:
                add(i, source, f"`{names[column]}` must name a file in every row. Received: an "
                               f"empty `{names[column]}` cell for case {ids[i]!r}{lines[i]}")
    for column in [k for k in cases if k.endswith("_path")]:
        for i, p in enumerate(cases[column]):
            try:
                exists = not p or Path(p).exists()
            except (OSError, ValueError) as err:  # e.g. a name over 255 bytes (errno 36)
                add(i, p, f"`{names[column]}` of case {ids[i]!r}{lines[i]} must be a valid file path. "
                          f"Received: a {len(p)}-character path {p[:80]!r}... "
                          f"({getattr(err, 'strerror', None) or err})")
                continue
            if not exists:
                add(i, p, f"`{names[column]}` of case {ids[i]} does not exist. Received: {p}")
    owner: dict[str, int] = {}
    for i, p in enumerate(cases["image_path"]):
        key = os.path.normpath(p) if p else ""
        if key and key in owner:
            j = owner[key]
            add(i, p, f"each image file must belong to one case. Received: case {ids[i]!r}"
                      f"{lines[i]} has the image of case {ids[j]!r}{lines[j]}")
        owner.setdefault(key, i)
    if "label" in cases:
        known = dataset.class_names
        for i, label in enumerate(cases["label"]):
            if not label.strip() or (known is not None and label not in known):
                rule = (f"one of the class names {list(known)} (`model.class_names`)" if known
                        else "a class name")
                add(i, cases["image_path"].iat[i] if dataset.tree else source,
                    f"`{names['label']}` must be {rule}. Received: {label!r} for case {ids[i]!r}"
                    f"{lines[i]}")
    findings = [f for f in cases if f in names and names[f] == f and f not in _CANONICAL
                and not f.endswith("_path")]
    for finding in findings:
        for i, value in enumerate(cases[finding]):
            if value.strip() not in ("0", "1"):
                add(i, source, f"finding column `{finding}` must hold 0 or 1. Received: {value!r} "
                               f"for case {ids[i]!r}{lines[i]}")
    if "patient_id" in cases and not dataset.seeded:
        for patient, rows_of in cases.groupby("patient_id", sort=True).indices.items():
            splits = sorted(set(cases["split"].iloc[rows_of]))
            if patient.strip() and len(splits) > 1:
                members = [ids[i] for i in rows_of]
                for i in rows_of:
                    add(int(i), source, f"a patient's cases must all be in one split. Received: "
                        # The id itself is left out: it may be a real patient ID.
                        f"one patient (same `patient_id`) in splits {splits} (cases {members[:5]}"
                        f"{' ...' if len(members) > 5 else ''})")
    return found


def split_cases(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split; an empty split is an error naming the splits present."""
    rows = df[df["split"] == split]
    if rows.empty:
        raise DataError(
            f"The manifest has no `{split}` cases. Received splits: {sorted(set(df['split']))}"
        )
    return rows.reset_index(drop=True)


def require_column(cases: pd.DataFrame, column: str, purpose: str) -> None:
    """Check that an optional manifest column is present and filled in every row of `cases`.

    Args:
        cases: rows from `read_manifest` (or `split_cases`).
        column: e.g. `mask_path`.
        purpose: what needs it, for the message (e.g. "training a segmentation model").

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
