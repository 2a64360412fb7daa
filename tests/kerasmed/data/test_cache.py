import numpy as np
import pandas as pd
import pytest

from kerasmed.data.cache import build_cache, load_cache
from kerasmed.data.manifest import read_manifest, split_cases
from serving.errors import DataError
from serving.image import Image
from serving.io import write_nifti
from serving.preprocessing import PreprocessSpec


def _dataset(root, n=2):
    rows = []
    for i in range(n):
        image = Image(np.full((4, 20, 20), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
        mask = np.zeros((4, 20, 20), np.uint8)
        mask[1, 5:9, 5:9] = 1
        write_nifti(image, root / f"c{i}.nii.gz")
        write_nifti(image.with_array(mask), root / f"c{i}_mask.nii.gz")
        rows.append({"case_id": f"c{i}", "image_path": f"c{i}.nii.gz",
                     "mask_path": f"c{i}_mask.nii.gz", "split": ["train", "val"][i % 2]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return read_manifest(root)


def test_cache_is_built_once_and_memory_mapped(tmp_path):
    manifest = _dataset(tmp_path)
    spec = PreprocessSpec((None, 2.0, 2.0), (None, 16, 16))
    folder = build_cache(manifest, spec, tmp_path / "cache", progress=False)
    mtime = (folder / "index.csv").stat().st_mtime_ns
    assert build_cache(manifest, spec, tmp_path / "cache", progress=False) == folder
    assert (folder / "index.csv").stat().st_mtime_ns == mtime  # reused, not rebuilt
    cases = load_cache(folder, "train")
    assert [c.case_id for c in cases] == ["c0"]
    assert isinstance(cases[0].image, np.memmap) and cases[0].image.shape == (4, 16, 16)
    assert cases[0].mask[1].sum() == 4  # 4x4 at 1 mm -> 2x2 at 2 mm
    other = build_cache(manifest, PreprocessSpec((None, 1.0, 1.0), (None, 24, 24)), tmp_path / "cache",
                        progress=False)
    assert other != folder  # a different spec never reuses a stale cache
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # no half-built cache left behind


def test_a_nan_voxel_fails_the_cache_build_naming_the_file(tmp_path):
    manifest = _dataset(tmp_path)
    image = Image(np.full((4, 20, 20), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
    image.array[2, 10, 10] = np.nan
    write_nifti(image, tmp_path / "c1.nii.gz")
    spec = PreprocessSpec((None, 2.0, 2.0), (None, 16, 16))
    with pytest.raises(
        DataError,
        match=r"^Image `.*c1\.nii\.gz` must be finite\. Received: 1 NaN and 0 inf values in a "
        r"\(4, 20, 20\) float32 array$",
    ):
        build_cache(manifest, spec, tmp_path / "cache", progress=False)
    # Nothing half-built is left to be mistaken for a cache.
    assert not any((tmp_path / "cache").glob("*/index.csv"))


def test_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="Data folder not found"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(DataError, match="Manifest not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("case_id,image_path\nc0,x.nii.gz\n")
    with pytest.raises(DataError, match="must have columns"):
        read_manifest(tmp_path)
    _dataset(tmp_path)
    (tmp_path / "c1.nii.gz").unlink()
    with pytest.raises(DataError, match="c1"):
        read_manifest(tmp_path)


def test_split_cases_reports_missing_split(tmp_path):
    manifest = _dataset(tmp_path)
    with pytest.raises(DataError, match="no `test` cases"):
        split_cases(manifest, "test")
