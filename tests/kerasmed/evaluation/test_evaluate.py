"""`kerasmed evaluate` on bad data: one line and exit code 2, like `train` (tests/kerasmed/test_cli.py)."""

import numpy as np
import pandas as pd
import pytest

from serving.image import Image
from serving.io import write_nifti
from tests.helpers import kerasmed_in_process, tiny_unet
from tests.kerasmed.test_cli import _assert_one_line_error, _write_config


@pytest.mark.parametrize("which", ["mask_path", "lung_mask_path"])
def test_mask_of_another_shape_is_one_line_exit_2(tmp_path, capfd, which):
    # `train` refused this (its cache checks every case); `evaluate` crashed in numpy instead.
    data = tmp_path / "data"
    data.mkdir()
    image = Image(np.full((4, 32, 32), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
    good = image.with_array(np.zeros((4, 32, 32), np.uint8))
    bad = Image(np.zeros((4, 32, 30), np.uint8), spacing=(2.5, 1.0, 1.0))
    write_nifti(image, data / "c0.nii.gz")
    write_nifti(good, data / "good.nii.gz")
    write_nifti(bad, data / "bad.nii.gz")
    paths = {"mask_path": "good.nii.gz", "lung_mask_path": "good.nii.gz", which: "bad.nii.gz"}
    pd.DataFrame([{"case_id": "c0", "image_path": "c0.nii.gz", "split": "val", **paths}]).to_csv(
        data / "manifest.csv", index=False)
    run = tmp_path / "run"
    run.mkdir()
    _write_config(run / "config.yaml", data={"root": str(data)})
    tiny_unet().save(run / "model.keras")
    what = "Mask" if which == "mask_path" else "Lung mask"
    _assert_one_line_error(
        kerasmed_in_process(capfd, "--quiet", "evaluate", run),
        f"{what} of case c0 must share the image geometry",
        "shape=(4, 32, 30)", str(data / "bad.nii.gz"),
    )
    assert not (run / "eval").exists()


def test_without_lung_masks_the_baseline_is_not_available(tmp_path, capfd):
    import json

    # A manifest with no `lung_mask_path` (and one where only some cases have one) is evaluated;
    # the HU-threshold baseline is reported as not available, or over the cases that have one.
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(2):
        image = Image(np.full((4, 32, 32), -800.0, np.float32), spacing=(2.5, 1.0, 1.0))
        image.array[1:3, 10:16, 10:16] = 50.0
        mask = (image.array > 0).astype(np.uint8)
        write_nifti(image, data / f"c{i}.nii.gz")
        write_nifti(image.with_array(mask), data / f"c{i}_mask.nii.gz")
        write_nifti(image.with_array(np.ones_like(mask)), data / f"c{i}_lungs.nii.gz")
        rows.append({"case_id": f"c{i}", "image_path": f"c{i}.nii.gz",
                     "mask_path": f"c{i}_mask.nii.gz", "split": "val"})
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    run = tmp_path / "run"
    run.mkdir()
    _write_config(run / "config.yaml", data={"root": str(data)},
                  preprocessing={"target_spacing": [None, None, None], "size": [None, 32, 32]},
                  model={"context_slices": 1})
    tiny_unet().save(run / "model.keras")
    out = kerasmed_in_process(capfd, "--quiet", "evaluate", run)
    assert out.returncode == 0, out.stderr
    assert "baseline mean Dice (HU threshold): n/a" in out.stdout
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["baseline_mean_dice"] is None and summary["cases"] == 2
    assert summary["baseline"] == "not available: no case names a `lung_mask_path`"
    assert pd.read_csv(run / "eval" / "metrics.csv")["baseline_dice"].isna().all()
    assert (run / "eval" / "dice_per_case.png").stat().st_size > 1000

    rows[1]["lung_mask_path"] = "c1_lungs.nii.gz"
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    out = kerasmed_in_process(capfd, "--quiet", "evaluate", run)
    assert out.returncode == 0, out.stderr
    summary = json.loads((run / "eval" / "summary.json").read_text())
    # Lungs everywhere: HU > -500 marks exactly the 50 HU block, which is the mask.
    assert summary["baseline_mean_dice"] == pytest.approx(1.0, abs=1e-6)
    assert summary["baseline"] == "HU > -500 inside the lung mask (1 of 2 cases name a `lung_mask_path`)"
