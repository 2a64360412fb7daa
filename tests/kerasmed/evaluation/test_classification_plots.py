import numpy as np
import pytest
from matplotlib.image import imread

from kerasmed.evaluation.classification_plots import plot_calibration, plot_confusion, plot_pr, plot_roc
from serving.errors import DataError
from serving.metrics import (
    apply_temperature,
    average_precision,
    bootstrap_ci,
    confusion_at,
    expected_calibration_error,
    pr_curve,
    reliability_bins,
    roc_auc,
    roc_curve,
    threshold_for_sensitivity,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path.name
    assert len(data) > 15_000, (path.name, len(data))  # axes, curves and legend, not a blank page
    img = imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300 and img[..., :3].std() > 0.05, path.name


def _data(seed, n=300):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.35
    return y, 1 / (1 + np.exp(-(2.5 * rng.normal(size=n) + 3 * y - 1)))


def _roc_entry(name, y, s):
    fpr, tpr, _ = roc_curve(y, s)
    t = threshold_for_sensitivity(y, s, 0.9)
    c = confusion_at(y, s, t)
    return {"label": name, "fpr": fpr, "tpr": tpr, "auc": roc_auc(y, s),
            "ci": bootstrap_ci(roc_auc, y, s, n=100), "operating_point": (1 - c["specificity"],
                                                                         c["sensitivity"]),
            "threshold": t}


def _pr_entry(name, y, s):
    precision, recall, _ = pr_curve(y, s)
    c = confusion_at(y, s, threshold_for_sensitivity(y, s, 0.9))
    return {"label": name, "precision": precision, "recall": recall,
            "ap": average_precision(y, s), "ci": bootstrap_ci(average_precision, y, s, n=100),
            "prevalence": y.mean(), "operating_point": (c["sensitivity"], c["ppv"])}


def test_all_plots_write_pngs_and_leave_no_temporary(tmp_path):
    y, s = _data(0)
    plot_roc(_roc_entry("nodule", y, s), tmp_path / "roc.png", title="Test ROC")
    classes = [_data(k) for k in range(3)]
    plot_roc([_roc_entry(f"class {k}", *d) for k, d in enumerate(classes)], tmp_path / "roc_ovr.png")
    plot_pr(_pr_entry("nodule", y, s), tmp_path / "pr.png")
    plot_pr([_pr_entry(f"class {k}", *d) for k, d in enumerate(classes)], tmp_path / "pr_ovr.png")
    plot_confusion(np.array([[50, 3, 2], [4, 30, 6], [0, 5, 12]]), ["normal", "benign", "malignant"],
                   tmp_path / "confusion.png", title="Confusion")
    before = reliability_bins(y, s)
    calibrated = apply_temperature(s, 2.0, "sigmoid")
    plot_calibration(before, reliability_bins(y, calibrated), expected_calibration_error(y, s),
                     expected_calibration_error(y, calibrated), tmp_path / "calibration.png")
    plot_calibration(before, None, expected_calibration_error(y, s), None, tmp_path / "cal_one.png")
    names = ["cal_one.png", "calibration.png", "confusion.png", "pr.png", "pr_ovr.png", "roc.png",
             "roc_ovr.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no hidden .tmp- sibling left
    for name in names:
        _assert_png(tmp_path / name)


def test_a_failed_plot_writes_nothing(tmp_path):
    with pytest.raises(KeyError):
        plot_roc({"fpr": [0, 1]}, tmp_path / "roc.png")  # no `tpr`: fails before the save
    with pytest.raises(DataError, match=r"\(C, C\) for C = len\(class_names\) = 2"):
        plot_confusion(np.eye(3), ["a", "b"], tmp_path / "confusion.png")
    with pytest.raises(DataError, match="non-negative"):
        plot_confusion(-np.eye(2), ["a", "b"], tmp_path / "confusion.png")
    with pytest.raises(DataError, match="at least one curve"):
        plot_pr([], tmp_path / "pr.png")
    assert list(tmp_path.iterdir()) == []
