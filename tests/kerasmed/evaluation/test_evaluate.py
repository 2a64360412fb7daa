"""`kerasmed evaluate` on bad data: one line and exit code 2, like `train` (tests/kerasmed/test_cli.py)."""

import numpy as np
import pandas as pd
import pytest

from serving.image import Image
from serving.io import write_nifti
from tests.helpers import tiny_unet
from tests.kerasmed.test_cli import _assert_one_line_error, _write_config, run_cli


@pytest.mark.parametrize("which", ["mask_path", "lung_mask_path"])
def test_mask_of_another_shape_is_one_line_exit_2(tmp_path, which):
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
        run_cli("--quiet", "evaluate", run), f"{what} of case c0 must share the image geometry",
        "shape=(4, 32, 30)", str(data / "bad.nii.gz"),
    )
    assert not (run / "eval").exists()
