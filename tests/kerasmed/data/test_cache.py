import fcntl
import hashlib
import io
import json
import os
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import kerasmed.data.cache as cache_module
from kerasmed.data.cache import (
    CACHE,
    build_cache,
    case_key,
    file_identity,
    load_cache,
    update_cache,
)
from kerasmed.data.manifest import read_manifest, split_cases
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import write_nifti
from serving.ownership import MARKER, read_marker
from serving.preprocessing import PreprocessSpec

SPEC = PreprocessSpec((None, 2.0, 2.0), (None, 16, 16))


def _write_case(root, i, value=-800.0, shape=(4, 20, 20), square=5):
    image = Image(np.full(shape, value, np.float32), spacing=(2.5, 1.0, 1.0))
    mask = np.zeros(shape, np.uint8)
    mask[1, square:square + 4, square:square + 4] = 1
    write_nifti(image, root / f"c{i}.nii.gz")
    write_nifti(image.with_array(mask), root / f"c{i}_mask.nii.gz")


def _dataset(root, n=2, shape=(4, 20, 20), square=5):
    """`n` NIfTI cases `c<i>` of `shape` at (2.5, 1, 1) mm, -800 HU, a 4x4 mask square on slice 1
    from row and column `square`; splits alternate train, val. Returns the read manifest."""
    rows = []
    for i in range(n):
        _write_case(root, i, shape=shape, square=square)
        rows.append({"case_id": f"c{i}", "image_path": f"c{i}.nii.gz",
                     "mask_path": f"c{i}_mask.nii.gz", "split": ["train", "val"][i % 2]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return read_manifest(root)


def _case_folders(folder):
    """`{name: st_ino}` of the finished case folders of a spec folder."""
    return {p.name: p.stat().st_ino for p in (folder / "cases").iterdir() if not p.name.startswith(".")}


def test_cache_is_built_once_per_case_memory_mapped_and_described(tmp_path):
    manifest = _dataset(tmp_path)
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert (report.built, report.reused) == (2, 0)
    assert report.folder.parent == tmp_path / "cache"
    assert report.index.parent == report.folder / "manifests"
    assert read_marker(report.folder)["kind"] == CACHE
    assert json.loads((report.folder / "spec.json").read_text()) == SPEC.to_dict()
    cases = load_cache(report.index, "train")
    assert [c.case_id for c in cases] == ["c0"]
    assert isinstance(cases[0].image, np.memmap) and cases[0].image.shape == (4, 16, 16)
    assert cases[0].image.dtype == np.float32 and cases[0].mask.dtype == np.uint8
    assert cases[0].mask[1].sum() == 4  # 4x4 at 1 mm -> 2x2 at 2 mm
    # Exactly these keys: the dataset fingerprint reads them; `key` and `files` guard the case.
    meta = dict(cases[0].meta)
    files = meta.pop("files")
    assert meta == {"case_id": "c0", "source_shape": [4, 20, 20],
                    "source_spacing": [2.5, 1.0, 1.0], "output_shape": [4, 16, 16],
                    "positive_slices": 1, "foreground_voxels": 4,
                    "mask": True, "key": case_key("c0", manifest.image_path[0], manifest.mask_path[0])}
    folder = report.folder / "cases" / meta["key"]
    for name, shape, dtype in (("image.npy", [4, 16, 16], "<f4"), ("mask.npy", [4, 16, 16], "|u1")):
        record = files[name]
        data = (folder / name).read_bytes()
        assert (record["size"], record["shape"], record["dtype"]) == (len(data), shape, dtype)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
    # Files of one or two 4 KiB blocks are sampled whole.
    assert files["mask.npy"]["sampled"]["offsets"] == [0]  # 128 + 1024 bytes
    assert files["image.npy"]["sampled"]["offsets"] == [0, 128]  # 128 + 4096 bytes
    index = pd.read_csv(report.index / "index.csv")
    assert index.columns.tolist() == ["case_id", "split", "slices", "positive_slices", "folder"]
    assert index[["slices", "positive_slices"]].values.tolist() == [[4, 1], [4, 1]]

    folders = _case_folders(report.folder)
    index_mtime = (report.index / "index.csv").stat().st_mtime_ns
    again = update_cache(manifest, SPEC, tmp_path / "cache", progress=False, workers=2)
    assert (again.built, again.reused, again.index) == (0, 2, report.index)
    assert _case_folders(report.folder) == folders  # reused, not rebuilt
    assert (report.index / "index.csv").stat().st_mtime_ns == index_mtime
    assert build_cache(manifest, SPEC, tmp_path / "cache", progress=False) == report.index
    assert not list((tmp_path / "cache").rglob(".*tmp*"))  # no half-built case left behind


@pytest.mark.parametrize("workers", [1, 2])
def test_a_nan_voxel_fails_the_build_naming_the_case_and_file_and_keeps_the_others(tmp_path, workers):
    manifest = _dataset(tmp_path, n=3)
    image = Image(np.full((4, 20, 20), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
    image.array[2, 10, 10] = np.nan
    write_nifti(image, tmp_path / "c1.nii.gz")
    with pytest.raises(
        DataError,
        match=r"^Case c1: Image `.*c1\.nii\.gz` must be finite\. Received: 1 NaN and 0 inf values "
        r"in a \(4, 20, 20\) float32 array$",
    ):
        build_cache(manifest, SPEC, tmp_path / "cache", progress=False, workers=workers)
    # Nothing half-built is left to be mistaken for a case or an index.
    (folder,) = (tmp_path / "cache").iterdir()
    assert not list(folder.rglob("index.csv"))
    assert not [p for p in (folder / "cases").iterdir() if p.name.startswith(".")]
    # A later run needs only the broken case (c0 is done; c2 is done too unless the pool stopped
    # before starting it).
    done = _case_folders(folder)
    assert case_key("c0", manifest.image_path[0], manifest.mask_path[0]) in done
    assert case_key("c1", manifest.image_path[1], manifest.mask_path[1]) not in done


def test_a_second_run_rebuilds_only_the_missing_case(tmp_path, monkeypatch):
    manifest = _dataset(tmp_path, n=3)
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    folders = _case_folders(report.folder)
    lost = case_key("c1", manifest.image_path[1], manifest.mask_path[1])
    for name in ("image.npy", "mask.npy", "meta.json"):
        (report.folder / "cases" / lost / name).unlink()
    (report.folder / "cases" / lost).rmdir()

    built = []
    real = cache_module.build_case
    monkeypatch.setattr(cache_module, "build_case", lambda *a: built.append(a[0]) or real(*a))
    again = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert built == ["c1"] and (again.built, again.reused) == (1, 2)
    after = _case_folders(report.folder)
    assert set(after) == set(folders)
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in folders.items() if k != lost}
    # A case folder emptied by hand is not taken as finished either.
    (report.folder / "cases" / lost / "mask.npy").unlink()
    built.clear()
    update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert built == ["c1"]
    assert load_cache(again.index)[1].mask[1].sum() == 4


def test_data_replaced_in_place_rebuilds_that_case_only_and_prune_removes_the_old_entry(tmp_path):
    manifest = _dataset(tmp_path, n=3)
    first = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    old = _case_folders(first.folder)
    _write_case(tmp_path, 1, value=-500.0)  # new content, new mtime, same path
    second = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert (second.built, second.reused, second.index) == (1, 2, first.index)
    # 20 mm at 2 mm is 10 voxels, centred in 16 with 3 of padding (-1024 HU) on each side.
    image = load_cache(second.index)[1].image
    np.testing.assert_array_equal(image[:, 3:13, 3:13], np.full((4, 10, 10), -500.0))
    assert np.count_nonzero(image == -1024.0) == 4 * (16 * 16 - 10 * 10)
    new = _case_folders(first.folder)
    assert len(new) == 4 and set(old) < set(new)  # the old entry stays until pruned
    # A touch alone (same bytes, new mtime) is a new identity as well.
    st = os.stat(tmp_path / "c2_mask.nii.gz")
    os.utime(tmp_path / "c2_mask.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert (third.built, third.reused) == (1, 2)

    # Prune: the two stale cases, another manifest's index; never a name kerasmed does not write.
    other = update_cache(manifest.iloc[:1], SPEC, tmp_path / "cache", progress=False)
    assert other.index != third.index
    (first.folder / "cases" / "notes.txt").write_text("mine")
    (first.folder / "cases" / "mine").mkdir()
    pruned = update_cache(manifest, SPEC, tmp_path / "cache", progress=False, prune=True)
    assert (pruned.built, pruned.reused, pruned.pruned) == (0, 3, 3)
    current = [case_key(r.case_id, r.image_path, r.mask_path) for r in manifest.itertuples()]
    assert sorted(p.name for p in (first.folder / "cases").iterdir()) == sorted(
        [*current, "mine", "notes.txt"])
    assert [p.name for p in (first.folder / "manifests").iterdir()] == [third.index.name]
    assert [c.case_id for c in load_cache(pruned.index)] == ["c0", "c1", "c2"]
    with pytest.raises(DataError, match=r"^The cache index must exist; run `kerasmed preprocess "
                       r"CONFIG`\. Received: .*index\.csv not found$"):
        load_cache(other.index)


def test_a_series_folder_is_identified_by_every_file_in_it(tmp_path):
    series = tmp_path / "dicom"
    (series / "sub").mkdir(parents=True)
    (series / "IM0002.dcm").write_bytes(b"ab")
    (series / "sub" / "IM0001.dcm").write_bytes(b"abc")
    found = file_identity(series)
    assert [(p, size) for p, size, _ in found] == [("IM0002.dcm", 2), ("sub/IM0001.dcm", 3)]
    key = case_key("c0", series, series / "IM0002.dcm")
    assert case_key("c0", series, series / "IM0002.dcm") == key
    assert case_key("c9", series, series / "IM0002.dcm") != key
    (series / "sub" / "IM0001.dcm").write_bytes(b"abd!")  # one slice replaced
    assert case_key("c0", series, series / "IM0002.dcm") != key
    key = case_key("c0", series, series / "IM0002.dcm")
    (series / "IM0003.dcm").write_bytes(b"")  # one slice added
    assert case_key("c0", series, series / "IM0002.dcm") != key


def test_a_changed_spec_or_preprocessing_version_gets_a_new_spec_folder(tmp_path, monkeypatch):
    manifest = _dataset(tmp_path)
    first = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    padded = update_cache(manifest, PreprocessSpec((None, 2.0, 2.0), (None, 16, 16), pad_value=-1000.0),
                          tmp_path / "cache", progress=False)
    assert padded.folder != first.folder and padded.built == 2
    # The version lives where `to_dict` reads it; a new resampler bumps it.
    spec_module = sys.modules[PreprocessSpec.to_dict.__module__]
    monkeypatch.setattr(spec_module, "PREPROCESSING_VERSION", spec_module.PREPROCESSING_VERSION + 1)
    bumped = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert bumped.folder not in (first.folder, padded.folder) and bumped.built == 2
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_leftovers_of_a_killed_build_are_deleted_and_nothing_else(tmp_path):
    manifest = _dataset(tmp_path)
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    cases = report.folder / "cases"
    leftovers = [cases / f".{'a' * 24}.tmp-0123abcd", cases / f".{'b' * 24}.del-89abcdef",
                 report.index / ".index.tmp-0123abcd.csv"]
    kept = [cases / ".mine.tmp-0123abcd", cases / f".{'a' * 24}.tmp-xyz"]
    for path in leftovers[:2] + kept:
        path.mkdir()
        (path / "image.npy").write_bytes(b"half")
    leftovers[2].write_text("case_id\n")
    update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert [p.exists() for p in leftovers] == [False] * 3
    assert [p.exists() for p in kept] == [True] * 2


def test_prune_refuses_a_spec_folder_kerasmed_did_not_mark(tmp_path):
    manifest = _dataset(tmp_path)
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    (report.folder / MARKER).unlink()  # how a user protects a folder
    with pytest.raises(ConfigError, match=r"^`--prune` deletes only in cache folders that kerasmed "
                       r"made .*Received: .* with marker None$"):
        update_cache(manifest, SPEC, tmp_path / "cache", progress=False, prune=True)
    assert len(_case_folders(report.folder)) == 2
    with pytest.raises(ConfigError, match=r"`workers` must be an integer >= 1\. Received: workers=0"):
        update_cache(manifest, SPEC, tmp_path / "cache", progress=False, workers=0)


def test_a_deleted_case_folder_is_a_data_error_naming_the_case(tmp_path):
    manifest = _dataset(tmp_path)
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    (report.folder / "cases" / case_key("c1", manifest.image_path[1], manifest.mask_path[1])
     / "image.npy").unlink()
    with pytest.raises(DataError, match=r"^Cached case c1 must be complete; run `kerasmed preprocess "
                       r"CONFIG` again\. Received: .*cases/[0-9a-f]{24} missing or incomplete$"):
        load_cache(report.index)


def test_a_second_build_waits_for_the_one_holding_the_lock(tmp_path, monkeypatch):
    manifest = _dataset(tmp_path)
    update_cache(manifest.iloc[:0], SPEC, tmp_path / "cache", progress=False)  # the spec folder
    (folder,) = (tmp_path / "cache").iterdir()
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    result = {}
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: result.update(
            r=update_cache(manifest, SPEC, tmp_path / "cache", progress=True)))
        thread.start()
        deadline = time.monotonic() + 60
        while "waiting for another process building" not in stderr.getvalue():
            assert thread.is_alive() and time.monotonic() < deadline, stderr.getvalue()
            time.sleep(0.01)
        assert _case_folders(folder) == {}  # nothing written while the other build holds it
    thread.join(60)
    assert result["r"].built == 2


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


def test_foreground_crop_crops_the_mask_with_the_images_box(tmp_path):
    """The mask follows the image's body box (a mask would otherwise be cropped to itself)."""
    image = np.full((4, 20, 20), -1000.0, np.float32)
    image[:, 3:15, 6:18] = 40.0  # the body: rows 3-14, columns 6-17
    mask = np.zeros((4, 20, 20), np.uint8)
    mask[2, 5:8, 9:11] = 1
    write_nifti(Image(image, spacing=(2.5, 1.0, 1.0)), tmp_path / "c0.nii.gz")
    write_nifti(Image(mask, spacing=(2.5, 1.0, 1.0)), tmp_path / "c0_mask.nii.gz")
    pd.DataFrame([{"case_id": "c0", "image_path": "c0.nii.gz", "mask_path": "c0_mask.nii.gz",
                   "split": "train"}]).to_csv(tmp_path / "manifest.csv", index=False)
    spec = PreprocessSpec((None, None, None), (None, None, None), crop_foreground=-500.0)
    [case] = load_cache(build_cache(read_manifest(tmp_path), spec, tmp_path / "cache",
                                    progress=False))
    assert case.image.shape == case.mask.shape == (4, 12, 12)
    assert np.all(case.image == 40.0)
    np.testing.assert_array_equal(case.mask, mask[:, 3:15, 6:18])


def test_cases_without_masks_are_cached_without_a_mask_file(tmp_path, monkeypatch):
    # A classification dataset: labels, no masks; one case a 2D image (cached as one slice).
    image = Image(np.full((4, 20, 20), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
    write_nifti(image, tmp_path / "volume.nii.gz")
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((20, 20), 100, np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "flat.json").write_text('{"spacing": [1.0, 1.0]}')
    manifest = pd.DataFrame({"case_id": ["v", "f"], "split": ["train", "val"], "label": ["a", "b"],
                             "image_path": [str(tmp_path / "volume.nii.gz"),
                                            str(tmp_path / "flat.png")]})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "noise.txt").write_text("x")
    monkeypatch.chdir(elsewhere)  # an empty mask path must never stand for the working folder
    key = case_key("v", manifest["image_path"][0], "")
    (elsewhere / "noise.txt").write_text("changed, and longer")
    assert case_key("v", manifest["image_path"][0], "") == key
    report = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    cases = {c.case_id: c for c in load_cache(report.index)}
    assert cases["v"].mask is None and cases["v"].image.shape == (4, 16, 16)
    assert cases["f"].image.shape == (1, 16, 16) and float(cases["f"].image.max()) == 100.0
    assert cases["v"].meta["mask"] is False and cases["v"].meta["foreground_voxels"] == 0
    folder = report.folder / "cases" / case_key("v", manifest["image_path"][0], "")
    assert sorted(p.name for p in folder.iterdir()) == ["image.npy", "meta.json"]
    again = update_cache(manifest, SPEC, tmp_path / "cache", progress=False)
    assert (again.built, again.reused) == (0, 2)
