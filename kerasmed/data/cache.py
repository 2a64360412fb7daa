"""Preprocess every case once into an on-disk cache that the tf.data pipeline memory-maps.

The cache folder is keyed by a hash of the manifest and the preprocessing spec, so changing either
builds a new cache and never reuses a stale one. It is written under a temporary name and renamed
when complete, so an interrupted build never looks finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kerasmed.data.manifest import check_case_geometry
from serving.atomic import atomic_dir
from serving.io import read_image
from serving.preprocessing import PreprocessSpec, preprocess


@dataclass(frozen=True)
class CachedCase:
    case_id: str
    split: str
    image: np.ndarray  # (Z, H, W) float32 HU, memory-mapped
    mask: np.ndarray  # (Z, H, W) uint8, memory-mapped


def _cache_key(manifest: pd.DataFrame, spec: PreprocessSpec) -> str:
    payload = json.dumps(
        {"cases": manifest[["case_id", "image_path", "mask_path", "split"]].values.tolist(),
         "spec": spec.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_cache(
    manifest: pd.DataFrame, spec: PreprocessSpec, cache_root: str | Path, progress: bool = True
) -> Path:
    """Preprocess all cases of `manifest` into `cache_root/<key>/` unless already there.

    Args:
        manifest: from `read_manifest` (absolute paths).
        spec: preprocessing spec.
        cache_root: parent folder of caches.
        progress: show a progress bar.

    Returns:
        The cache folder, holding `<case_id>_image.npy`, `<case_id>_mask.npy` and `index.csv`.
    """
    cache_root = Path(cache_root)
    folder = cache_root / _cache_key(manifest, spec)
    if (folder / "index.csv").is_file():
        return folder
    with atomic_dir(folder) as tmp:
        rows = []
        for row in tqdm(manifest.itertuples(), total=len(manifest), desc="cache", disable=not progress):
            image = read_image(row.image_path)
            mask = read_image(row.mask_path)
            # The model's channels are neighbouring slices, so an RGB image has no place here.
            image.require_grey(f"The slice cache (case {row.case_id}, `{row.image_path}`)")
            mask.require_grey(f"The slice cache (case {row.case_id}, `{row.mask_path}`)")
            check_case_geometry(image, mask, row.case_id, row.mask_path)
            x, _ = preprocess(image, spec)
            y, _ = preprocess(mask, spec, order="nearest")
            np.save(tmp / f"{row.case_id}_image.npy", x.astype(np.float32))
            np.save(tmp / f"{row.case_id}_mask.npy", y.astype(np.uint8))
            rows.append({"case_id": row.case_id, "split": row.split, "slices": x.shape[0],
                         "positive_slices": int(np.count_nonzero(y.reshape(y.shape[0], -1).any(1)))})
        pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
        (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    return folder


def load_cache(folder: str | Path, split: str | None = None) -> list[CachedCase]:
    """Memory-map the cached cases (optionally of one split)."""
    folder = Path(folder)
    index = pd.read_csv(folder / "index.csv", dtype={"case_id": str})
    if split is not None:
        index = index[index["split"] == split]
    return [
        CachedCase(
            case_id=r.case_id,
            split=r.split,
            image=np.load(folder / f"{r.case_id}_image.npy", mmap_mode="r"),
            mask=np.load(folder / f"{r.case_id}_mask.npy", mmap_mode="r"),
        )
        for r in index.itertuples()
    ]
