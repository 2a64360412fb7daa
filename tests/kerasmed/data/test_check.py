"""`check_dataset` and `kerasmed check-data` on a corrupt corpus beside good cases, and
`kerasmed train --skip-bad` on it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import PIL.Image
import pydicom
import pytest
import yaml

from kerasmed.config import config_from_dict, load_config
from kerasmed.data.check import check_dataset, training_cases
from kerasmed.data.generate import generate_dataset
from kerasmed.data.synthetic_patches import generate_patch_dataset
from serving.errors import DataError
from serving.image import Image
from serving.io import write_dicom_series, write_nifti
from tests.kerasmed.test_cli import CONFIG, ROOT, run_cli

SPACING = (2.5, 0.8, 0.8)
SHAPE = (8, 32, 32)
COLUMNS = ["case_id", "image_path", "mask_path", "lung_mask_path", "split", "patient_id", "label"]


def _ct(seed):
    rng = np.random.default_rng(seed)
    array = np.full(SHAPE, -800.0, np.float32) + rng.normal(0, 20, SHAPE).astype(np.float32)
    array[3:6, 12:20, 12:20] = 60.0
    return Image(array, SPACING, modality="CT")


def _mask(image, empty=False):
    mask = np.zeros(SHAPE, np.uint8)
    if not empty:
        mask[3:6, 12:20, 12:20] = 1
    return image.with_array(mask)


def _dicom(root, name, seed):
    return write_dicom_series(_ct(seed), root / name, uid_entropy=f"check-{name}")


def corrupt_corpus(root):
    """Good cases (NIfTI and DICOM, 8 x 32 x 32) beside one case per problem.

    Returns:
        `(good, bad)`: the good case ids, and per bad case `(file, needle)`: the file its problem
        names (relative to `root`, "manifest.csv" for the manifest) and a text its reason holds.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows, bad = [], {}

    def row(case_id, image, mask, split="train", lung="", patient=None, label="nodule"):
        rows.append([case_id, image, mask, lung, split, patient or f"P-{case_id}", label])

    for i, split in enumerate(["train", "train", "train", "val", "val"]):
        image = _ct(i)
        write_nifti(image, root / f"good{i}.nii.gz")
        write_nifti(_mask(image), root / f"good{i}_mask.nii.gz")
        row(f"good{i}", f"good{i}.nii.gz", f"good{i}_mask.nii.gz", split,
            lung=f"good{i}_mask.nii.gz" if i % 2 else "")
    _dicom(root, "good_dcm", 10)
    write_nifti(_mask(_ct(10)), root / "good_dcm_mask.nii.gz")
    row("good_dcm", "good_dcm", "good_dcm_mask.nii.gz", "train")
    # Problem cases, each with a valid mask so that only the named file is wrong.
    write_nifti(_mask(_ct(0)), root / "mask.nii.gz")

    def broken(case_id, image, needle, file=None, mask="mask.nii.gz", **kw):
        row(case_id, image, mask, **kw)
        bad[case_id] = (file or image, needle)

    folder = _dicom(root, "truncated_dcm", 11)
    data = (folder / "IM0003.dcm").read_bytes()
    (folder / "IM0003.dcm").write_bytes(data[:-100])
    broken("truncated_dcm", "truncated_dcm", "complete Rows x Columns pixel data")
    folder = _dicom(root, "no_pixels_dcm", 12)
    ds = pydicom.dcmread(folder / "IM0004.dcm")
    del ds.PixelData
    ds.save_as(folder / "IM0004.dcm")
    broken("no_pixels_dcm", "no_pixels_dcm", "IM0004.dcm` holds no pixel data")
    folder = _dicom(root, "gap_dcm", 13)
    (folder / "IM0005.dcm").unlink()
    broken("gap_dcm", "gap_dcm", "missing slice")
    nan = _ct(14)
    nan.array[2, 5, 5] = np.nan
    write_nifti(nan, root / "nan.nii.gz")
    broken("nan_nifti", "nan.nii.gz", "must be finite. Received: 1 NaN")
    (root / "zero.png").write_bytes(b"")
    broken("zero_png", "zero.png", "must be a complete PNG")
    broken("missing_file", "gone.nii.gz", "does not exist")
    PIL.Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "rgb.png")
    PIL.Image.fromarray(np.ones((32, 32), np.uint8)).save(root / "rgb_mask.png")
    broken("rgb_png", "rgb.png", "requires a grey image", mask="rgb_mask.png")
    image = _ct(15)
    write_nifti(image, root / "offgrid.nii.gz")
    write_nifti(Image(np.ones((8, 32, 30), np.uint8), SPACING), root / "offgrid_mask.nii.gz")
    broken("off_grid", "offgrid.nii.gz", "must share the image geometry", file="offgrid_mask.nii.gz",
           mask="offgrid_mask.nii.gz")
    image = _ct(16)
    write_nifti(image, root / "empty.nii.gz")
    write_nifti(_mask(image, empty=True), root / "empty_mask.nii.gz")
    broken("empty_mask", "empty.nii.gz", "must mark at least one voxel", file="empty_mask.nii.gz",
           mask="empty_mask.nii.gz")
    image = _ct(17)
    write_nifti(image, root / "label.nii.gz")
    write_nifti(_mask(image), root / "label_mask.nii.gz")
    broken("bad_label", "label.nii.gz", "Received: 'tumour'", file="manifest.csv",
           mask="label_mask.nii.gz", label="tumour")
    # The same case id again (good0 keeps its first row), and a patient in two splits.
    row("good0", "good0.nii.gz", "good0_mask.nii.gz", "train")
    for case_id, split in (("leak_a", "train"), ("leak_b", "val")):
        image = _ct(18 if split == "train" else 19)
        write_nifti(image, root / f"{case_id}.nii.gz")
        write_nifti(_mask(image), root / f"{case_id}_mask.nii.gz")
        broken(case_id, f"{case_id}.nii.gz",
               "one patient (same `patient_id`) in splits ['train', 'val']",
               file="manifest.csv", mask=f"{case_id}_mask.nii.gz", split=split, patient="P-leak")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "manifest.csv", index=False)
    good = [f"good{i}" for i in range(5)] + ["good_dcm"]
    return good, bad


CORPUS_CONFIG = {"data": {"columns": {"label": "label"}},
                 "model": {"class_names": ["background", "nodule"]}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "data"
    good, bad = corrupt_corpus(root)
    return root, good, bad


def _config(root, **sections):
    raw = {"data": {"root": str(root), **CORPUS_CONFIG["data"]}, "model": CORPUS_CONFIG["model"]}
    raw.update(sections)
    return config_from_dict(raw)


def test_every_problem_is_listed_with_its_file_and_the_good_cases_are_read(corpus):
    root, good, bad = corpus
    report = check_dataset(_config(root), progress=False)
    assert sorted(report.good["case_id"]) == sorted(good)
    assert report.good["case_id"].is_unique and len(report.cases) == len(good) + len(bad) + 1
    problems = report.problems
    for case_id, (file, needle) in bad.items():
        mine = problems[problems["case_id"] == case_id]
        assert len(mine) == 1, (case_id, mine.to_dict("records"))
        assert mine["file"].iloc[0] == str(root / file), case_id
        assert needle in mine["reason"].iloc[0], (case_id, mine["reason"].iloc[0])
    repeated = problems[problems["case_id"] == "good0"]
    # The repeated row is also a second use of good0's image: both problems name its line.
    assert sorted(repeated["reason"].str[:25]) == ["case ids must be unique (", "each image file must belo"]
    line = pd.read_csv(root / "manifest.csv")["case_id"].tolist().index("good0", 1) + 2
    assert all(f"good0' (line {line})" in r for r in repeated["reason"])
    assert len(problems) == len(bad) + 2
    assert report.skipped == len(bad) + 1
    # Statistics of every case whose image was read: the good ones and those with other problems.
    stats = report.stats.set_index("case_id")
    assert {"good_dcm", "empty_mask", "rgb_png"} <= set(stats.index)
    assert "nan_nifti" not in stats.index and "zero_png" not in stats.index
    assert stats.loc["good_dcm", ["size_z", "size_y", "size_x"]].tolist() == [8, 32, 32]
    np.testing.assert_allclose(stats.loc["good_dcm", ["spacing_z", "spacing_y", "spacing_x"]].tolist(),
                               SPACING, atol=1e-4)
    assert stats.loc["good1", "mask_voxels"] == 3 * 8 * 8
    np.testing.assert_allclose(stats.loc["good1", "mask_fraction"], 192 / (8 * 32 * 32))
    assert stats.loc["empty_mask", "mask_voxels"] == 0
    # -800 HU +- 20 noise and a 60 HU block (2.3 % of the voxels): p1 below -800, p99 at 60.
    assert -900 < stats.loc["good1", "p1"] < -820 and stats.loc["good1", "p99"] == 60.0
    np.testing.assert_allclose(stats.loc["good1", "max"], 60.0)


def test_summary_table_and_written_report(corpus, tmp_path):
    root, good, bad = corpus
    report = check_dataset(_config(root), progress=False)
    summary = report.summary()
    assert list(summary.columns) == ["train", "val", "all"]
    assert summary.loc["cases", "all"] == str(len(report.cases))
    assert summary.loc["good", "train"] == "4" and summary.loc["good", "val"] == "2"
    assert summary.loc["size z (median [min, max])", "all"] == "8 [1, 8]"  # the RGB PNG is 2D
    assert summary.loc["spacing y mm", "val"] == "0.8 [0.8, 0.8]"
    assert summary.loc["empty masks", "train"] == "1"
    assert summary.loc["labels", "all"] == f"nodule: {len(report.cases) - 1}, tumour: 1"
    folder = report.write(tmp_path / "out")
    written = pd.read_csv(folder / "problems.csv")
    assert written["case_id"].tolist() == report.problems["case_id"].tolist()
    text = (folder / "summary.md").read_text()
    assert "| cases |" in text and f"## Problems ({len(report.problems)})" in text
    assert report.warnings == [] and "## Warnings" not in text  # CT under the default window
    with PIL.Image.open(folder / "histogram.png") as png:
        pixels = np.asarray(png.convert("L"))
    assert png.size[0] > 400 and pixels.std() > 10  # a drawn plot, not a blank canvas
    assert len(pd.read_csv(folder / "cases.csv")) == len(report.stats)
    assert not list(folder.glob(".*tmp*"))


def test_check_data_cli_lists_every_problem_and_exits_1(corpus, tmp_path):
    root, good, bad = corpus
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"].update(root=str(root), **CORPUS_CONFIG["data"])
    config.write_text(yaml.safe_dump(raw))
    out = run_cli("--quiet", "check-data", config, "--output", tmp_path / "report")
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    for case_id, (file, needle) in bad.items():
        mine = [line for line in lines if line.startswith(f"{case_id}: {root / file}: ")]
        assert len(mine) == 1 and needle in mine[0], (case_id, out.stdout)
    assert sum(line.startswith("good0: ") for line in lines) == 2
    assert f"{len(bad) + 2} problem(s) in {len(bad) + 1} of {len(good) + len(bad) + 1} cases" in lines[-1]
    assert "intensity p1 / p99 (median)" in out.stdout
    for name in ("problems.csv", "summary.md", "histogram.png", "cases.csv"):
        assert (tmp_path / "report" / name).is_file()
        # The manifest's patient ids may be real ones: no report names them.
        assert b"P-leak" not in (tmp_path / "report" / name).read_bytes(), name
    assert "P-leak" not in out.stdout + out.stderr
    # A clean dataset: exit 0, and the report in the default folder, <data.root>/check.
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in ("good0.nii.gz", "good0_mask.nii.gz", "good3.nii.gz", "good3_mask.nii.gz"):
        shutil.copy(root / name, clean / name)
    pd.DataFrame({"case_id": ["a", "b"], "image_path": ["good0.nii.gz", "good3.nii.gz"],
                  "mask_path": ["good0_mask.nii.gz", "good3_mask.nii.gz"],
                  "split": ["train", "val"]}).to_csv(clean / "manifest.csv", index=False)
    # In a process of its own, to see that the check never imports TensorFlow.
    code = ("import sys; from kerasmed.cli import main; "
            f"code = main(['--quiet', 'check-data', {str(CONFIG)!r}, '--set', 'data.root={clean}']); "
            "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-2].startswith("no problems in 2 cases")
    assert out.stdout.splitlines()[-1] == "tensorflow imported: False"
    assert (clean / "check" / "problems.csv").read_text().strip() == "case_id,file,reason"


def _microscopy(root, n=6):
    """A CSV manifest of 16-bit fluorescence images (nuclei at about 30000 on a 2000 background)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = rng.normal(2000, 300, (32, 32))
        image[8:20, 10:22] += 28000
        PIL.Image.fromarray(np.clip(image, 0, 65535).astype(np.uint16)).save(root / f"n{i}.png")
        rows.append((f"n{i}", f"n{i}.png", "train" if i < 4 else "val", "nucleus" if i % 2 else "none"))
    pd.DataFrame(rows, columns=["case_id", "image_path", "split", "label"]).to_csv(
        root / "manifest.csv", index=False)
    return {"task": "classification", "data": {"root": str(root), "columns": {
                "mask": None, "label": "label"}},
            "preprocessing": {"target_spacing": [None, None, None], "size": [None, 32, 32]},
            "model": {"name": "cnn", "class_names": ["none", "nucleus"]}}


def test_a_hu_window_on_16_bit_microscopy_is_a_warning_not_a_problem(tmp_path):
    raw = _microscopy(tmp_path / "data")
    report = check_dataset(config_from_dict(raw), progress=False)
    assert report.problems.empty and len(report.good) == 6
    (warning,) = report.warnings
    assert warning.startswith("100% of the voxels are clipped to its high end 400 by "
                              "model.hu_window [-1000, 400]")
    assert "`preprocessing.zscore: true` with `model.intensity: none`" in warning
    assert report.stats["window_above"].tolist() == [1.0] * 6
    text = (report.write(tmp_path / "report") / "summary.md").read_text()
    assert f"## Warnings (1)\n\n- {warning}\n" in text and "## Problems (0)" in text
    # The CLI prints it, and exits 0: a warning fails nothing.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = run_cli("--quiet", "check-data", config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"warning: {warning}" in out.stdout.splitlines()
    assert out.stdout.splitlines()[-1].startswith("no problems in 6 cases, 1 warning(s); report:")
    # As advised: z-scored, no HU window. No warning.
    fixed = check_dataset(config_from_dict({**raw, "preprocessing": {
        **raw["preprocessing"], "zscore": True}, "model": {**raw["model"], "intensity": "none"}}),
        progress=False)
    assert fixed.warnings == [] and "window_above" not in fixed.stats


def test_z_scores_under_a_hu_window_are_a_warning(tmp_path):
    raw = _microscopy(tmp_path / "data")
    raw["preprocessing"]["zscore"] = True
    report = check_dataset(config_from_dict(raw), progress=False)
    (warning,) = report.warnings  # the raw data meet no window: only the settings' clash
    assert warning.startswith("`preprocessing.zscore: true` with `model.intensity: hu_window`: the "
                              "z-scored intensities (about -3 to 3 standard deviations) fall inside "
                              "model.hu_window [-1000, 400] and fill 0.43% of it")
    assert report.problems.empty


def test_no_intensity_warning_on_the_ct_flagships_synthetic_data(tmp_path):
    generate_dataset(tmp_path / "ct", num_cases=3, shape=(12, 96, 96), split_fractions=(0.4, 0.3, 0.3),
                     progress=False)
    flagship = load_config(CONFIG, [f"data.root={tmp_path / 'ct'}"])
    report = check_dataset(flagship, progress=False)
    assert report.problems.empty and report.warnings == []
    assert 0.1 < report.stats["window_below"].mean() < 0.6  # air below -1000 HU: no misfit
    generate_patch_dataset(tmp_path / "patches", num_volumes=3, patches_per_volume=4, patch_size=32,
                           context=3, shape=(24, 160, 160), progress=False)
    nodule_cls = load_config(ROOT / "configs" / "nodule_cls.yaml",
                             [f"data.root={tmp_path / 'patches'}"])
    report = check_dataset(nodule_cls, progress=False)
    assert report.problems.empty and report.warnings == []


def test_check_data_user_errors_exit_2(tmp_path):
    out = run_cli("check-data", CONFIG, "--set", f"data.root={tmp_path / 'nowhere'}")
    assert out.returncode == 2 and "Data folder not found" in out.stderr
    (tmp_path / "manifest.csv").write_text("case_id,image_path,split\nc0,a.npy,train\n")
    out = run_cli("check-data", CONFIG, "--set", f"data.root={tmp_path}")
    assert out.returncode == 2 and "must have columns ['case_id', 'image_path', 'mask_path']" in out.stderr
    (tmp_path / "file").write_text("")
    out = run_cli("check-data", CONFIG, "--set", f"data.root={tmp_path}", "--output", tmp_path / "file")
    assert out.returncode == 2 and "must be a folder" in out.stderr


def test_training_cases_refuse_a_dataset_without_masks(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "a.png")
    config = _config(tmp_path, data={"root": str(tmp_path), "format": "imagefolder"})
    for skip_bad in (False, True):
        with pytest.raises(DataError, match=r"^Training a segmentation model needs a mask per case "
                           r"\(`data.columns.mask`; an ImageFolder tree has none\)\. Received: "
                           r"data.format=imagefolder, columns=\['case_id', 'image_path', 'split', "
                           r"'label'\]$"):
            training_cases(config, skip_bad=skip_bad)


def test_a_classifiers_colour_images_are_problems_and_skip_bad_skips_them(tmp_path, capsys):
    from tests.serving.io.dicom_builders import _shipped

    # Issue 16: a classifier's data had no grey check, so RGB files passed check-data and then
    # failed training's cache, and `--skip-bad` stopped instead of skipping them.
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(4):
            PIL.Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    PIL.Image.fromarray(np.full((8, 8, 3), 40, np.uint8)).save(tmp_path / "dog" / "rgb.png")
    palette = PIL.Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 3, mode="P")
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    palette.save(tmp_path / "dog" / "palette.png")
    grey_palette = PIL.Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 3, mode="P")
    grey_palette.putpalette([0, 0, 0, 100, 100, 100, 255, 255, 255])
    grey_palette.save(tmp_path / "cat" / "grey_palette.png")  # shows grey: no problem
    shutil.copy(_shipped("SC_rgb_small_odd.dcm"), tmp_path / "cat" / "rgb.dcm")
    (tmp_path / "dog" / "broken.png").write_bytes(b"")
    config = _config(tmp_path, data={"root": str(tmp_path), "format": "imagefolder",
                                     "split": {"fractions": [0.5, 0.5, 0.0]}},
                     model={"class_names": ["cat", "dog"], "name": "cnn"}, task="classification",
                     preprocessing={"size": [None, 8, 8]})
    report = check_dataset(config, progress=False)
    problems = dict(zip(report.problems["case_id"], report.problems["reason"]))
    assert sorted(problems) == ["cat/rgb.dcm", "dog/broken.png", "dog/palette.png", "dog/rgb.png"]
    for case_id in ("cat/rgb.dcm", "dog/palette.png", "dog/rgb.png"):
        assert "requires a grey image" in problems[case_id], problems[case_id]
        assert "an RGB image (3 channels)" in problems[case_id], problems[case_id]
    assert len(report.good) == 9 and report.seeded
    assert report.summary().loc["labels", "all"] == "cat: 6, dog: 7"
    # What `train --skip-bad` trains on: the nine grey images, without an error.
    kept = training_cases(config, skip_bad=True, progress=False, write_report=False)
    assert sorted(kept["case_id"]) == sorted(report.good["case_id"])
    assert not set(kept["case_id"]) & set(problems)


def test_skip_bad_keeps_the_good_cases_and_says_how_many_it_skipped(corpus, capsys):
    root, good, bad = corpus
    # Six problems need no file read: the repeated row (twice), the missing file, the label and
    # the patient's two cases.
    with pytest.raises(DataError, match=r"case ids must be unique.*'good0' \(line \d+\), first "
                       r"\(line 2\); and 5 more problem\(s\), listed by `kerasmed check-data`$"):
        training_cases(_config(root))
    cases = training_cases(_config(root), skip_bad=True, progress=False)
    assert sorted(cases["case_id"]) == sorted(good)
    assert f"skipped {len(bad) + 1} of {len(good) + len(bad) + 1} cases (see {root}/check/problems.csv)" \
        in capsys.readouterr().out


@pytest.mark.slow
def test_train_skip_bad_trains_on_the_good_cases(corpus, tmp_path):
    root, good, bad = corpus
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"].update(root=str(root), cache_dir=str(tmp_path / "cache"), **CORPUS_CONFIG["data"])
    config.write_text(yaml.safe_dump(raw))
    tiny = ["preprocessing.target_spacing=[null,null,null]", "preprocessing.size=[null,32,32]",
            "sampling.patch_size=[32,32]", "sampling.batch_size=4", "model.filters=4",
            "model.depth=2", "training.epochs=1", "training.steps_per_epoch=2",
            "training.max_val_slices=4"]
    args = [x for o in tiny for x in ("--set", o)]
    out = run_cli("--quiet", "train", config, *args, "--run-dir", tmp_path / "run")
    assert out.returncode == 2 and "Manifest" in out.stderr  # without --skip-bad: the first problem
    out = run_cli("--quiet", "train", config, *args, "--run-dir", tmp_path / "run", "--skip-bad")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"skipped {len(bad) + 1} of {len(good) + len(bad) + 1} cases" in out.stdout
    assert (tmp_path / "run" / "model.keras").is_file()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    index = pd.read_csv(f"{summary['cache']}/index.csv")
    assert sorted(index["case_id"]) == sorted(good)


def test_what_the_readers_assumed_is_printed_once_however_many_files(tmp_path):
    """Radiographs whose PixelSpacing is 0.000\\0.000 are read (spacing assumed): check-data says
    so once, with the number of files, in its output and in summary.md."""
    from tests.serving.io.test_dicom_quirks import _cr

    root = tmp_path / "data"
    rows = []
    for i in range(3):
        folder = root / f"r{i}"
        folder.mkdir(parents=True)
        _cr(folder, PixelSpacing=["0.000", "0.000"])
        rows.append((f"r{i}", f"r{i}/cr.dcm", "train" if i < 2 else "val", "none" if i else "finding"))
    pd.DataFrame(rows, columns=["case_id", "image_path", "split", "label"]).to_csv(
        root / "manifest.csv", index=False)
    raw = {"task": "classification", "data": {"root": str(root), "columns": {"mask": None,
                                                                          "label": "label"}},
           "preprocessing": {"target_spacing": [None, None, None], "size": [None, 6, 5]},
           "model": {"name": "cnn", "class_names": ["none", "finding"]}}
    report = check_dataset(config_from_dict(raw), progress=False)
    assert report.problems.empty and len(report.good) == 3
    (note,) = report.notes
    assert report.notes[note] == 3 and "spacing assumed to be 1.0 per pixel" in note
    assert report.stats["spacing_y"].tolist() == [1.0] * 3
    text = (report.write(tmp_path / "report") / "summary.md").read_text()
    assert f"## What the readers assumed (1)\n\n- note (3 files): {note}\n" in text
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = run_cli("--quiet", "check-data", config)
    assert out.returncode == 0, out.stdout + out.stderr
    printed = [line for line in out.stdout.splitlines() if line.startswith("note")]
    assert printed == [f"note (3 files): {note}"]
