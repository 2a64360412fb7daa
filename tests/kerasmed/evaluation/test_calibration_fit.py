import numpy as np
import pytest
from scipy.special import expit
from scipy.special import softmax as scipy_softmax
from sklearn.metrics import log_loss

from kerasmed.evaluation.calibration import (
    DEFAULT_BOUNDS,
    bound_reached,
    fit_temperature,
    negative_log_likelihood,
)
from serving.errors import ConfigError, DataError
from serving.metrics import apply_temperature, expected_calibration_error, roc_auc, top_label

T_TRUE = 2.5


def _binary(seed, n, t_true=T_TRUE):
    """An over-confident model (t_true > 1): it outputs sigmoid(z), the truth is sigmoid(z / T)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, n)
    y = rng.random(n) < expit(z / t_true)
    return expit(z), y, z


def _multiclass(seed, n, c=4, t_true=T_TRUE):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, c))
    cumulative = np.cumsum(scipy_softmax(z / t_true, axis=1), axis=1)
    y = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), c - 1)
    return scipy_softmax(z, axis=1), y, z


def test_recovers_a_known_temperature_sigmoid():
    probs, y, z = _binary(0, 20_000)
    t = fit_temperature(probs, y, "sigmoid")
    assert t == pytest.approx(T_TRUE, rel=0.10)
    assert fit_temperature(z, y, "sigmoid", from_logits=True) == pytest.approx(t, rel=1e-3)
    # An under-confident model is sharpened (T < 1).
    probs_u, y_u, _ = _binary(1, 20_000, t_true=0.5)
    assert fit_temperature(probs_u, y_u, "sigmoid") == pytest.approx(0.5, rel=0.10)


def test_recovers_a_known_temperature_softmax():
    probs, y, z = _multiclass(2, 10_000)
    t = fit_temperature(probs, y, "softmax")
    assert t == pytest.approx(T_TRUE, rel=0.10)
    assert fit_temperature(probs, np.eye(4)[y], "softmax") == pytest.approx(t, rel=1e-9)
    assert fit_temperature(z, y, "softmax", from_logits=True) == pytest.approx(t, rel=1e-3)


def test_the_fit_is_the_minimum_of_the_nll():
    probs, y, _ = _binary(3, 4000)
    t = fit_temperature(probs, y, "sigmoid")
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 400))
    nll = [negative_log_likelihood(probs, y, "sigmoid", g) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], rel=0.02)  # grid step ~1%
    best = negative_log_likelihood(probs, y, "sigmoid", t)
    assert best <= min(nll) + 1e-9
    assert best < negative_log_likelihood(probs, y, "sigmoid", 1.0)


def test_nll_matches_sklearn_log_loss():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.01, 0.99, 500)  # inside the clipping, so both compute the same
    y = rng.random(500) < p
    assert negative_log_likelihood(p, y, "sigmoid") == pytest.approx(log_loss(y, p), rel=1e-9)
    q = scipy_softmax(rng.normal(size=(300, 3)), axis=1)
    labels = rng.integers(0, 3, 300)
    assert negative_log_likelihood(q, labels, "softmax") == pytest.approx(
        log_loss(labels, q, labels=[0, 1, 2]), rel=1e-9)
    scaled = apply_temperature(q, 2.0, "softmax")
    assert negative_log_likelihood(q, labels, "softmax", 2.0) == pytest.approx(
        log_loss(labels, scaled, labels=[0, 1, 2]), rel=1e-9)


def test_fitted_temperature_lowers_ece_on_held_out_data_and_keeps_auc():
    probs, y, _ = _binary(5, 20_000)
    val, test = slice(0, 10_000), slice(10_000, None)
    t = fit_temperature(probs[val], y[val], "sigmoid")
    calibrated = apply_temperature(probs[test], t, "sigmoid")
    before = expected_calibration_error(y[test], probs[test])
    after = expected_calibration_error(y[test], calibrated)
    assert before > 0.1 and after < 0.02
    assert roc_auc(y[test], calibrated) == pytest.approx(roc_auc(y[test], probs[test]), abs=1e-12)
    mprobs, my, _ = _multiclass(6, 10_000)
    t = fit_temperature(mprobs[:5000], my[:5000], "softmax")
    before = expected_calibration_error(*top_label(my[5000:], mprobs[5000:]))
    after = expected_calibration_error(*top_label(my[5000:],
                                                  apply_temperature(mprobs[5000:], t, "softmax")))
    assert before > 0.1 and after < 0.03


def test_bad_arguments_are_refused():
    probs, y, _ = _binary(7, 50)
    with pytest.raises(ConfigError, match="Received: activation='relu'"):
        fit_temperature(probs, y, "relu")
    with pytest.raises(ConfigError, match="`bounds` must be"):
        fit_temperature(probs, y, "sigmoid", bounds=(2.0, 5.0))
    with pytest.raises(DataError, match="shape of `probs`"):
        fit_temperature(probs, y[:-1], "sigmoid")
    with pytest.raises(DataError, match=r"\(N, C\) with C >= 2"):
        fit_temperature(probs, y, "softmax")
    with pytest.raises(DataError, match="must be finite"):
        fit_temperature(np.r_[probs[:-1], np.nan], y, "sigmoid")
    with pytest.raises(ConfigError, match="`temperature` must be"):
        negative_log_likelihood(probs, y, "sigmoid", -1.0)


def test_a_fit_stopped_at_a_bound_is_reported():
    # Issue 16: every logit alike (a model that learned nothing) pushed T to 20 silently, every
    # calibrated probability on 0.5; perfectly separated predictions push it to the lower bound.
    y = np.array([0, 1] * 20)
    flat = np.full(40, 0.88)
    separated = np.where(y == 1, 0.9, 0.1)
    t_flat, t_separated = fit_temperature(flat, y, "sigmoid"), fit_temperature(separated, y, "sigmoid")
    assert t_flat == pytest.approx(DEFAULT_BOUNDS[1], rel=1e-3) and bound_reached(t_flat) == 20.0
    assert t_separated == pytest.approx(DEFAULT_BOUNDS[0], rel=1e-3) and bound_reached(t_separated) == 0.05
    probs, labels, _ = _binary(3, 2000)
    t = fit_temperature(probs, labels, "sigmoid")
    assert 0.2 < t < 5 and bound_reached(t) is None
