import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

import serving.metrics as metrics_package
from serving.errors import ConfigError, DataError
from serving.metrics import (
    average_precision,
    bootstrap_ci,
    confusion_at,
    macro_auc,
    pr_curve,
    roc_auc,
    roc_curve,
    threshold_for_sensitivity,
)
from serving.metrics.overlap import dice, mean_dice
from tests.helpers import assert_allclose

# Three positives, three negatives; 0.4 is a tie of two positives and one negative.
Y = np.array([0, 1, 1, 0, 1, 0])
S = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.2])


def _random_case(seed, n, decimals=None):
    """Labels with prevalence ~30% and scores that separate them partly; rounding makes ties."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = rng.normal(size=n) + 1.2 * y
    return y, (np.round(s, decimals) if decimals is not None else s)


def test_package_keeps_the_old_imports_and_needs_numpy_only():
    assert metrics_package.dice is dice and metrics_package.mean_dice is mean_dice
    code = ("import sys, serving.metrics; bad = [m for m in ('scipy', 'sklearn', 'tensorflow', "
            "'pandas', 'keras') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hand_worked_roc_and_pr():
    fpr, tpr, thr = roc_curve(Y, S)
    # At 0.8: one positive. At 0.4: the whole tie enters (all 3 positives, 1 negative).
    assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    assert_allclose(tpr, [0, 1 / 3, 1, 1, 1])
    assert thr[0] == np.inf and list(thr[1:]) == [0.8, 0.4, 0.2, 0.1]
    # Pairs: positive 0.8 beats all 3 negatives; each 0.4 beats 0.1 and 0.2 and ties 0.4 (1/2).
    assert roc_auc(Y, S) == pytest.approx((3 + 2 * 2.5) / 9)
    precision, recall, pthr = pr_curve(Y, S)
    assert_allclose(precision, [1, 3 / 4, 3 / 5, 3 / 6])
    assert_allclose(recall, [1 / 3, 1, 1, 1])
    assert list(pthr) == [0.8, 0.4, 0.2, 0.1]
    assert average_precision(Y, S) == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 4)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]) == 0.875
    assert roc_auc([0, 1, 0, 1], [5, 5, 5, 5]) == 0.5  # all tied: no information
    assert roc_auc([0, 0, 1], [1, 2, 3]) == 1.0 and roc_auc([1, 1, 0], [1, 2, 3]) == 0.0


@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous, many ties, mostly ties
@pytest.mark.parametrize("seed,n", [(0, 15), (1, 200), (2, 2000)])
def test_curves_and_areas_match_sklearn(seed, n, decimals):
    y, s = _random_case(seed, n, decimals)
    for labels in (y, y.astype(np.int64), y.astype(np.float32)):
        assert roc_auc(labels, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    assert_allclose(fpr, sk_fpr, atol=1e-12)
    assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert_allclose(thr, sk_thr, atol=0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)
    precision, recall, pthr = pr_curve(y, s)
    sk_p, sk_r, sk_t = skm.precision_recall_curve(y, s)
    # sklearn: increasing thresholds plus a final (precision 1, recall 0) point without one.
    assert_allclose(precision, sk_p[:-1][::-1], atol=1e-12)
    assert_allclose(recall, sk_r[:-1][::-1], atol=1e-12)
    assert_allclose(pthr, sk_t[::-1], atol=0)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("call", [
    lambda y, s: roc_auc(y, s), lambda y, s: roc_curve(y, s),
    lambda y, s: bootstrap_ci(roc_auc, y, s, n=10)])
def test_one_class_bad_values_and_lengths_are_refused(call):
    with pytest.raises(DataError, match="at least one negative case.*Received: 3 positive and 0"):
        call([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="at least one positive"):
        call([0, 0], [0.1, 0.2])
    with pytest.raises(DataError, match="`score` must be finite. Received: 1 NaN"):
        call([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(DataError, match="same length. Received: 3 labels and 2 scores"):
        call([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match=r"only 0 and 1.*Received: values \[2\]"):
        call([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match=r"1-D.*Received: shape \(2, 2\)"):
        call([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(DataError, match="real numbers"):
        call([0, 1], ["a", "b"])


def test_pr_needs_positives_only():
    assert average_precision([1, 1], [0.2, 0.9]) == 1.0
    with pytest.raises(DataError, match="at least one positive"):
        pr_curve([0, 0], [0.2, 0.9])


def _binormal(seed, n_each, shift=1.0):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(shift, 1, n_each), rng.normal(0, 1, n_each)]
    return np.r_[np.ones(n_each, bool), np.zeros(n_each, bool)], s


def test_bootstrap_ci_covers_the_true_auc_and_narrows_with_the_number_of_cases():
    true_auc = norm.cdf(1.0 / np.sqrt(2))  # positives N(1, 1) vs negatives N(0, 1): 0.760
    y, s = _binormal(0, 1000)
    low, high = bootstrap_ci(roc_auc, y, s, n=1000)
    assert low < true_auc < high
    assert low < roc_auc(y, s) < high
    # Hanley & McNeil's standard error here is 0.0106, so a 95% interval is about 0.042 wide.
    assert 0.032 < high - low < 0.052
    widths = [np.subtract(*bootstrap_ci(roc_auc, *_binormal(1, m), n=400)[::-1]) for m in (100, 900)]
    assert 2.3 < widths[0] / widths[1] < 3.9  # width ~ 1 / sqrt(cases): a ratio of 3
    assert bootstrap_ci(roc_auc, y, s, n=200, seed=3) == bootstrap_ci(roc_auc, y, s, n=200, seed=3)
    assert bootstrap_ci(roc_auc, y, s, n=200, seed=3) != bootstrap_ci(roc_auc, y, s, n=200, seed=4)


def test_bootstrap_ci_coverage_over_many_data_sets():
    true_auc = norm.cdf(1.0 / np.sqrt(2))
    hits = [low < true_auc < high for low, high in
            (bootstrap_ci(roc_auc, *_binormal(100 + k, 100), n=200, level=0.9, seed=k)
             for k in range(40))]
    assert 0.75 <= np.mean(hits) <= 1.0  # nominal 0.9; 40 draws put 0.75 about 3 SE below it


def test_bootstrap_redraws_resamples_that_miss_a_class():
    seen = []

    def metric(labels, scores):
        seen.append(int(labels.sum()))
        return roc_auc(labels, scores)

    y = np.zeros(8, bool)
    y[3] = True  # one positive: about 34% of raw resamples miss it
    low, high = bootstrap_ci(metric, y, np.arange(8.0), n=300, level=0.5)
    assert len(seen) == 300 and min(seen) >= 1 and max(seen) <= 7
    assert 0.0 <= low <= high <= 1.0
    assert_allclose(bootstrap_ci(average_precision, Y, S, n=50), bootstrap_ci(average_precision, Y, S, n=50))
    with pytest.raises(DataError, match="finite value on every resample"):
        bootstrap_ci(lambda a, b: float("nan"), Y, S, n=5)
    for kwargs, key in (({"n": 0}, "`n`"), ({"n": 2.5}, "`n`"), ({"level": 1.0}, "`level`")):
        with pytest.raises(ConfigError, match=key):
            bootstrap_ci(roc_auc, Y, S, **kwargs)


def test_threshold_for_sensitivity_hand_worked():
    y = np.array([1, 1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.7, 0.7, 0.3, 0.8, 0.5, 0.1])
    assert threshold_for_sensitivity(y, s, 0.25) == 0.9
    assert threshold_for_sensitivity(y, s, 0.5) == 0.7  # the tie brings 3 of 4 in at once
    assert threshold_for_sensitivity(y, s, 0.75) == 0.7
    assert threshold_for_sensitivity(y, s, 0.76) == 0.3
    assert threshold_for_sensitivity(y, s, 1.0) == 0.3
    for bad in (0.0, 1.01, -1):
        with pytest.raises(ConfigError, match="`min_sensitivity` must be in"):
            threshold_for_sensitivity(y, s, bad)


@pytest.mark.parametrize("target", [0.7, 0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("decimals", [None, 1])
def test_threshold_for_sensitivity_is_the_highest_that_reaches_it(target, decimals):
    y, s = _random_case(5, 300, decimals)
    y[:10] = True  # n_pos a multiple of 10 is where 0.7 * n_pos != 7 * n_pos / 10 bites
    y[10:] = y[10:] & (np.arange(290) < 60)
    t = threshold_for_sensitivity(y, s, target)
    assert confusion_at(y, s, t)["sensitivity"] >= target
    higher = s[s > t]
    if higher.size:
        assert confusion_at(y, s, higher.min())["sensitivity"] < target
    # Independently: sklearn's ROC points run down the thresholds; the first with tpr >= target.
    _, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    assert t == sk_thr[np.flatnonzero(sk_tpr >= target - 1e-12)[0]]


def test_confusion_at_matches_sklearn_and_defines_nan():
    y, s = _random_case(7, 500, 1)
    t = 0.5  # with one decimal, many scores equal the threshold: they are called positive
    c = confusion_at(y, s, t)
    pred = s >= t
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (tp, fp, tn, fn)
    assert c["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert c["specificity"] == pytest.approx(skm.recall_score(~y, ~pred))
    assert c["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert c["npv"] == pytest.approx(skm.precision_score(~y, ~pred))
    assert c["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert c["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert confusion_at(Y, S, 0.4)["tp"] == 3 and confusion_at(Y, S, 0.4)["fp"] == 1
    none = confusion_at(Y, S, np.inf)  # nothing called positive
    assert none["tp"] == none["fp"] == 0 and np.isnan(none["ppv"]) and none["f1"] == 0.0
    assert none["specificity"] == 1.0 and none["npv"] == 0.5
    negatives_only = confusion_at([0, 0, 0], [0.1, 0.5, 0.9], 0.5)
    assert np.isnan(negatives_only["sensitivity"]) and negatives_only["specificity"] == 1 / 3
    assert negatives_only["f1"] == 0.0  # two false positives: defined, and 0
    clean = confusion_at([0, 0], [0.1, 0.2], 0.5)  # no positive called, none present
    assert np.isnan(clean["f1"]) and np.isnan(clean["ppv"]) and clean["accuracy"] == 1.0
    with pytest.raises(ConfigError, match="`threshold` must be a number"):
        confusion_at(Y, S, float("nan"))


def test_macro_auc_matches_sklearn_for_multi_class_and_multi_label():
    rng = np.random.default_rng(11)
    n, c = 400, 4
    truth = rng.integers(0, c, n)
    onehot = np.eye(c, dtype=int)[truth]
    logits = rng.normal(size=(n, c)) + 1.5 * onehot
    probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # ties
    macro, per_class = macro_auc(onehot, probs)
    assert_allclose(per_class, skm.roc_auc_score(onehot, probs, average=None), atol=1e-12)
    assert macro == pytest.approx(skm.roc_auc_score(onehot, probs, average="macro"), abs=1e-12)
    multi = (rng.random((n, 3)) < [0.2, 0.5, 0.7]).astype(float)
    scores = rng.random((n, 3)) + 0.4 * multi
    macro, per_class = macro_auc(multi, scores)
    assert macro == pytest.approx(skm.roc_auc_score(multi, scores, average="macro"), abs=1e-12)


def test_macro_auc_leaves_out_classes_with_one_value():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]])
    macro, per_class = macro_auc(y, p)
    assert per_class[:2] == [0.75, 0.75] and np.isnan(per_class[2])  # class 2 never occurs
    assert macro == 0.75
    with pytest.raises(DataError, match="one-hot labels, not class indices"):
        macro_auc([0, 1, 0, 1], p)
    with pytest.raises(DataError, match="at least one class with both"):
        macro_auc(np.ones((3, 2)), np.zeros((3, 2)))
