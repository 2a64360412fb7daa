import keras
import numpy as np

from kerasmed.losses import DiceCELoss, DiceScore, get_loss
from tests.helpers import assert_allclose


def test_perfect_prediction_has_near_zero_loss_and_dice_one():
    y = np.zeros((2, 8, 8, 1), np.float32)
    y[0, 2:5, 2:5] = 1
    pred = np.clip(y, 1e-6, 1 - 1e-6)
    loss = float(DiceCELoss()(y, pred))
    assert loss < 1e-3
    metric = DiceScore()
    metric.update_state(y, pred)
    assert float(metric.result()) == 1.0


def test_dice_term_matches_hand_computation():
    y = np.zeros((1, 4, 4, 1), np.float32)
    y[0, :2, :2] = 1
    pred = np.full_like(y, 0.5)
    ce = float(np.mean(-np.log(0.5) * np.ones_like(y)))
    dice = (2 * 2.0 + 1) / (4 + 8 + 1)
    assert_allclose(float(DiceCELoss()(y, pred)), ce + (1 - dice), atol=1e-5)


def test_softmax_variant_and_serialisation():
    labels = np.zeros((1, 4, 4, 1), np.float32)
    labels[0, 1:3, 1:3] = 2
    probs = keras.ops.one_hot(labels[..., 0].astype(int), 3).numpy() * 0.98 + 0.02 / 3
    assert float(DiceCELoss()(labels, probs)) < 0.1
    clone = DiceCELoss.from_config(DiceCELoss(dice_weight=0.5).get_config())
    assert clone.dice_weight == 0.5
    assert isinstance(get_loss("dice_ce"), DiceCELoss)
