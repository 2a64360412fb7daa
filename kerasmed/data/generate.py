"""Write a synthetic lung-nodule CT dataset to disk, in the layout real datasets use.

Layout under `root`:

    cases/<case_id>/dicom/IM0001.dcm ...    the CT as a DICOM series (int16, HU via intercept)
    cases/<case_id>/nodules.nii.gz          uint8 nodule mask, same geometry
    cases/<case_id>/lungs.nii.gz            uint8 lung mask, same geometry
    manifest.csv    case_id, image_path, mask_path, lung_mask_path, split (paths relative to root)
    nodules.csv     case_id, nodule_id, center_{x,y,z}_mm (LPS), diameter_mm, kind, attachment
    dataset.json    the generation parameters; a finished dataset with the same ones is reused
    .kerasmed       marks the folder as made by kerasmed (`serving.ownership`)

Everything is written into a temporary sibling folder that is renamed to `root` at the end, so an
interrupted run never leaves a folder that looks like a dataset.

Example:
    >>> manifest = generate_dataset("data/synthetic_ct", num_cases=24, seed=0)
    >>> pandas.read_csv(manifest).split.value_counts()      # train 17, val 5, test 2
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from kerasmed.data.synthetic_ct import GENERATOR_VERSION, make_case
from serving.atomic import atomic_dir
from serving.errors import ConfigError, DataError
from serving.io import write_dicom_series, write_nifti
from serving.ownership import DATASET, check_output_folder, write_marker

FORMAT_VERSION = 1
MANIFEST_COLUMNS = ["case_id", "image_path", "mask_path", "lung_mask_path", "split"]
NODULE_COLUMNS = [
    "case_id",
    "nodule_id",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "diameter_mm",
    "kind",
    "attachment",
]
SPLITS = ("train", "val", "test")
# How both the CLI and Python callers ask to replace a folder; the library does not know which.
OVERWRITE_FLAG = "--overwrite (Python: overwrite=True)"


def case_seed(seed: int, index: int) -> int:
    """The `make_case` seed of case `index` of a dataset made with `seed` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def split_counts(num_cases: int, split_fractions) -> dict[str, int]:
    """Cases per split: rounded fractions, at least one validation case, train takes the rest.

    Raises:
        ConfigError: if the fractions are not three non-negative numbers summing to 1, or leave
            no training case.
    """
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            "`split_fractions` must be 3 non-negative numbers (train, val, test) summing to 1. "
            f"Received: split_fractions={split_fractions}"
        )
    n_val = max(1, int(round(fractions[1] * num_cases)))
    n_test = int(round(fractions[2] * num_cases))
    n_train = num_cases - n_val - n_test
    if n_train < 1:
        raise ConfigError(
            "`num_cases` and `split_fractions` must leave at least one training case and one "
            f"validation case. Received: num_cases={num_cases}, split_fractions={split_fractions}"
        )
    return {"train": n_train, "val": n_val, "test": n_test}


def dataset_params(num_cases: int, seed: int, split_fractions, shape) -> dict:
    """The generation parameters `dataset.json` records, checked (see `generate_dataset`).

    Raises:
        ConfigError: if `num_cases` or `split_fractions` are invalid.
    """
    if int(num_cases) < 2:
        raise ConfigError(
            f"`num_cases` must be at least 2 (one train, one val). Received: num_cases={num_cases}"
        )
    split_counts(int(num_cases), split_fractions)
    return {
        "format_version": FORMAT_VERSION,
        "generator": "kerasmed.data.synthetic_ct.make_case",
        "generator_version": GENERATOR_VERSION,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "split_fractions": [float(f) for f in split_fractions],
        "shape": [int(s) for s in shape],
    }


def generate_dataset(
    root: str | os.PathLike,
    num_cases: int = 24,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    shape: tuple[int, int, int] = (48, 256, 256),
    progress: bool = True,
    overwrite: bool = False,
    created_by: str = "kerasmed generate",
) -> Path:
    """Generate (or reuse) a synthetic chest-CT nodule dataset and return its manifest path.

    Args:
        root: dataset folder to create.
        num_cases: number of cases (at least 2: one train, one val).
        seed: dataset seed; case `i` uses `case_seed(seed, i)`.
        split_fractions: (train, val, test) shares, split by case; at least one val case.
        shape: volume shape `(z, y, x)` of every case.
        progress: show a tqdm progress bar.
        overwrite: replace an existing `root` that holds something else (even files kerasmed
            did not write).
        created_by: recorded in the `.kerasmed` marker of the folder (see `serving.ownership`).

    Returns:
        Path of `root/manifest.csv`.

    Raises:
        ConfigError: if `num_cases`, `shape` or `split_fractions` are invalid.
        DataError: if `root` is a file or not writable, or exists with different content and
            `overwrite` is False. Nothing is deleted before these checks.
    """
    root = Path(root)
    params = dataset_params(num_cases, seed, split_fractions, shape)
    if is_complete_dataset(root, params):
        return root / "manifest.csv"
    # Even a dataset generate made with other parameters is replaced only on request: runs and
    # caches may point at it.
    check_output_folder(
        root, "Dataset folder `root`", DATASET, OVERWRITE_FLAG, overwrite=overwrite,
        owned=lambda marker: False, error=DataError,
        rule=f"absent, empty or a finished dataset made with parameters {params}",
    )

    counts = split_counts(params["num_cases"], params["split_fractions"])
    with atomic_dir(root) as tmp:
        write_marker(tmp, DATASET, created_by)
        manifest, nodules, seeds = _write_cases(tmp, params, counts, progress)
        pd.DataFrame(manifest, columns=MANIFEST_COLUMNS).to_csv(tmp / "manifest.csv", index=False)
        pd.DataFrame(nodules, columns=NODULE_COLUMNS).to_csv(tmp / "nodules.csv", index=False)
        info = {**params, "split_counts": counts, "case_seeds": seeds, "complete": True}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return root / "manifest.csv"


def _write_cases(tmp: Path, params: dict, counts: dict[str, int], progress: bool):
    num_cases, seed = params["num_cases"], params["seed"]
    # Splits are assigned to shuffled case indices, so no split is biased by generation order.
    order = np.random.default_rng([seed, 1]).permutation(num_cases)
    split_of = {}
    start = 0
    for split in SPLITS:
        for index in order[start : start + counts[split]]:
            split_of[int(index)] = split
        start += counts[split]

    manifest, nodules, seeds = [], [], []
    for index in tqdm(
        range(num_cases), desc="synthetic CT cases", disable=not progress, unit="case"
    ):
        case_id = f"case_{index:03d}"
        seeds.append(case_seed(seed, index))
        case = make_case(seeds[-1], shape=tuple(params["shape"]))
        rel = Path("cases") / case_id
        write_dicom_series(
            case.ct,
            tmp / rel / "dicom",
            series_description=f"kerasmed synthetic chest CT {case_id}",
            uid_entropy=f"kerasmed-synthetic-{seed}-{index}",
        )
        write_nifti(case.nodule_mask, tmp / rel / "nodules.nii.gz")
        write_nifti(case.lung_mask, tmp / rel / "lungs.nii.gz")
        manifest.append(
            [
                case_id,
                (rel / "dicom").as_posix(),
                (rel / "nodules.nii.gz").as_posix(),
                (rel / "lungs.nii.gz").as_posix(),
                split_of[index],
            ]
        )
        for number, nodule in enumerate(case.nodules, start=1):
            nodules.append({"case_id": case_id, "nodule_id": number, **nodule})
    return manifest, nodules, seeds


def is_complete_dataset(root: str | os.PathLike, params: dict) -> bool:
    """Whether `root` is a finished dataset made with exactly `params` (all files present)."""
    root = Path(root)
    if not root.is_dir():
        return False
    try:
        info = json.loads((root / "dataset.json").read_text())
        manifest = pd.read_csv(root / "manifest.csv")
    except (OSError, ValueError):
        return False
    if not info.get("complete") or any(info.get(k) != v for k, v in params.items()):
        return False
    if list(manifest.columns) != MANIFEST_COLUMNS or len(manifest) != params["num_cases"]:
        return False
    paths = manifest[["image_path", "mask_path", "lung_mask_path"]].to_numpy().ravel()
    return (root / "nodules.csv").is_file() and all((root / p).exists() for p in paths)
