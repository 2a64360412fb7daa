import numpy as np
import pandas as pd
from matplotlib.image import imread

from kerasmed.evaluation.plots import plot_dice_per_case, plot_overlay_montage, plot_training_curves


def _is_png_with_content(path):
    img = imread(path)
    return img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.01


def test_plots_write_non_blank_pngs(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
                  "dice": [0.2, 0.5, 0.7], "val_dice": [0.1, 0.4, 0.6]}).to_csv(log, index=False)
    plot_training_curves(log, tmp_path / "curves.png")
    metrics = pd.DataFrame({"case_id": ["a", "b"], "dice": [0.8, 0.7], "baseline_dice": [0.1, 0.2]})
    plot_dice_per_case(metrics, tmp_path / "dice.png")
    truth = np.zeros((32, 32), bool)
    truth[10:20, 10:20] = True
    image = np.where(truth, 40.0, -850.0)
    plot_overlay_montage([{"case_id": "a", "slice": 3, "image": image, "truth": truth,
                           "pred": np.roll(truth, 2, 0), "dice": 0.8}], tmp_path / "montage.png")
    for name in ("curves.png", "dice.png", "montage.png"):
        assert _is_png_with_content(tmp_path / name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "dice.png", "log.csv", "montage.png"]
