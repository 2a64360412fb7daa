import numpy as np
import pytest
from scipy.special import expit
from scipy.special import softmax as scipy_softmax
from sklearn.calibration import calibration_curve

from serving.errors import ConfigError, DataError
from serving.metrics import (
    apply_temperature,
    calibration_error,
    expected_calibration_error,
    logits_from_probabilities,
    reliability_bins,
    roc_auc,
    top_label,
)
from tests.helpers import assert_allclose


def test_reliability_bins_hand_worked():
    y = np.array([0, 1, 0, 1, 1, 1])
    p = np.array([0.0, 0.15, 0.15, 0.95, 1.0, 0.55])
    bins = reliability_bins(y, p, bins=10)
    assert_allclose(bins["edges"], np.linspace(0, 1, 11))
    assert bins["count"].tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # p = 1 is in the last bin
    assert_allclose(bins["confidence"][[0, 1, 5, 9]], [0.0, 0.15, 0.55, 0.975])
    assert_allclose(bins["frequency"][[0, 1, 5, 9]], [0.0, 0.5, 1.0, 1.0])
    assert np.isnan(bins["confidence"][2]) and np.isnan(bins["frequency"][2])
    # ECE: (1 * 0 + 2 * 0.35 + 1 * 0.45 + 2 * 0.025) / 6
    expected = (2 * 0.35 + 0.45 + 2 * 0.025) / 6
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(expected)
    assert calibration_error(bins) == pytest.approx(expected)
    one = reliability_bins(y, p, bins=1)
    assert one["count"].tolist() == [6]
    assert expected_calibration_error(y, p, bins=1) == pytest.approx(abs(4 / 6 - p.mean()))


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_bins_match_sklearn_calibration_curve(n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.beta(0.7, 1.3, 3000)
    y = rng.random(3000) < p**1.5  # over-confident at the top
    bins = reliability_bins(y, p, bins=n_bins)
    sk_true, sk_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    filled = bins["count"] > 0
    assert_allclose(bins["frequency"][filled], sk_true, atol=1e-12)
    assert_allclose(bins["confidence"][filled], sk_pred, atol=1e-12)
    assert bins["count"].sum() == 3000


def test_ece_is_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = rng.random(50_000) < p
    assert expected_calibration_error(y, p) < 0.01
    # Predicting p for an event of probability p**2: the gap integrates to about 1/6.
    assert expected_calibration_error(rng.random(50_000) < p**2, p) == pytest.approx(1 / 6, abs=0.01)
    # Multi-label (N, C): every case-class pair counts once.
    assert expected_calibration_error(y.reshape(-1, 5), p.reshape(-1, 5)) == pytest.approx(
        expected_calibration_error(y, p))


def test_top_label_from_indices_and_one_hot():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    correct, confidence = top_label([0, 2, 2], probs)
    assert correct.tolist() == [True, False, True]
    assert_allclose(confidence, [0.7, 0.5, 0.8])
    correct_1h, confidence_1h = top_label(np.eye(3)[[0, 2, 2]], probs)
    assert correct_1h.tolist() == correct.tolist()
    assert_allclose(confidence_1h, confidence)
    with pytest.raises(DataError, match="exactly one 1 per row"):
        top_label(np.ones((3, 3)), probs)
    with pytest.raises(DataError, match=r"class indices in \[0, 3\)"):
        top_label([0, 3, 1], probs)
    with pytest.raises(DataError, match="probabilities in"):
        top_label([0, 1, 1], probs * 2)


def test_apply_temperature_sigmoid_and_softmax():
    # logit(0.9) / 2 = log(3): sigmoid gives 3 / 4.
    assert_allclose(apply_temperature(np.array([0.9]), 2.0, "sigmoid"), [0.75], atol=1e-12)
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    root = np.sqrt(p)  # softmax(log p / 2) = sqrt(p) / sum sqrt(p)
    assert_allclose(apply_temperature(p, 2.0, "softmax"), root / root.sum(1, keepdims=True),
                    atol=1e-12)
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, (50, 4))
    for t in (0.5, 1.0, 3.0):
        assert_allclose(apply_temperature(z, t, "sigmoid", from_logits=True), expit(z / t),
                        atol=1e-12)
        assert_allclose(apply_temperature(z, t, "softmax", from_logits=True),
                        scipy_softmax(z / t, axis=1), atol=1e-12)
        assert_allclose(apply_temperature(expit(z), t, "sigmoid"), expit(z / t), atol=1e-6)
        assert_allclose(apply_temperature(scipy_softmax(z, axis=1), t, "softmax"),
                        scipy_softmax(z / t, axis=1), atol=1e-6)
    # Ranking, so AUC, never changes; probabilities keep their float32 dtype.
    y = rng.random(200) < 0.4
    s = expit(rng.normal(size=200) + y).astype(np.float32)
    scaled = apply_temperature(s, 2.5, "sigmoid")
    assert scaled.dtype == np.float32
    assert roc_auc(y, scaled) == roc_auc(y, s)
    # Saturated probabilities are clipped, not turned into infinite logits.
    assert np.all(np.isfinite(logits_from_probabilities(np.array([0.0, 1.0]), "sigmoid")))
    assert_allclose(apply_temperature(np.array([0.0, 1.0]), 1.0, "sigmoid"), [0, 1], atol=1e-6)


def test_apply_temperature_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="positive finite.*Received: temperature=0"):
        apply_temperature(np.array([0.5]), 0, "sigmoid")
    with pytest.raises(ConfigError, match="temperature=nan"):
        apply_temperature(np.array([0.5]), float("nan"), "sigmoid")
    with pytest.raises(ConfigError, match="one of 'sigmoid', 'softmax'. Received: activation='relu'"):
        apply_temperature(np.array([0.5]), 1.0, "relu")
    with pytest.raises(DataError, match="at least two classes"):
        apply_temperature(np.array([[0.5]]), 1.0, "softmax")
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        apply_temperature(np.array([1.5]), 1.0, "sigmoid")
    with pytest.raises(DataError, match="must be finite"):
        apply_temperature(np.array([np.nan]), 1.0, "sigmoid", from_logits=True)


def test_reliability_bins_refuse_bad_input():
    with pytest.raises(ConfigError, match="`bins` must be a positive integer"):
        reliability_bins([0, 1], [0.2, 0.8], bins=0)
    with pytest.raises(DataError, match="of one shape"):
        reliability_bins([0, 1, 1], [0.2, 0.8])
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        reliability_bins([0, 1], [-0.2, 0.8])
    with pytest.raises(DataError, match="only 0 and 1"):
        reliability_bins([0, 3], [0.2, 0.8])
