"""Losses and metrics kerasmed registers: soft Dice + cross-entropy, Dice score, specificity."""

from __future__ import annotations

import keras
from keras import ops

from serving.registry import Registry


@keras.saving.register_keras_serializable(package="kerasmed")
class DiceCELoss(keras.losses.Loss):
    """`dice_weight * (1 - soft Dice) + cross-entropy`, Dice pooled over the whole batch.

    Pooling Dice over the batch (not per image) keeps the loss defined for patches without
    foreground, which balanced sampling produces half the time.

    Args:
        dice_weight: weight of the Dice term.
        smooth: added to numerator and denominator.
        **kwargs: passed to `keras.losses.Loss`.

    Shapes: `y_true` `(B, H, W, C)` in {0, 1} (C=1 binary) or `(B, H, W, 1)` class indices for
    softmax outputs; `y_pred` `(B, H, W, C)` probabilities.
    """

    def __init__(self, dice_weight=1.0, smooth=1.0, name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        channels = y_pred.shape[-1]
        if channels == 1:
            y_true = ops.cast(y_true, "float32")
            ce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
            fg_true, fg_pred = y_true, y_pred
        else:
            labels = ops.cast(ops.squeeze(y_true, -1), "int32")
            ce = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, y_pred))
            fg_true = ops.one_hot(labels, channels)[..., 1:]
            fg_pred = y_pred[..., 1:]
        intersection = ops.sum(fg_true * fg_pred)
        total = ops.sum(fg_true) + ops.sum(fg_pred)
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        # Broadcast to one value per example so Keras' reduction and distribution scaling apply.
        return ops.ones_like(y_pred[:, 0, 0, 0]) * (ce + self.dice_weight * (1.0 - dice))

    def get_config(self):
        config = super().get_config()
        config.update({"dice_weight": self.dice_weight, "smooth": self.smooth})
        return config


@keras.saving.register_keras_serializable(package="kerasmed")
class DiceScore(keras.metrics.Metric):
    """Dice of the thresholded foreground, accumulated over all batches of an epoch."""

    def __init__(self, threshold=0.5, name="dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        if y_pred.shape[-1] == 1:
            pred = ops.cast(y_pred >= self.threshold, "float32")
            true = ops.cast(y_true > 0.5, "float32")
        else:
            pred = ops.cast(ops.argmax(y_pred, -1) > 0, "float32")
            true = ops.cast(ops.squeeze(y_true, -1) > 0, "float32")
        self.intersection.assign_add(ops.sum(pred * true))
        self.total.assign_add(ops.sum(pred) + ops.sum(true))

    def result(self):
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0)

    def reset_state(self):
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="kerasmed")
class Specificity(keras.metrics.Metric):
    """True-negative rate TN / (TN + FP) of thresholded sigmoid outputs (every output of a
    multi-label model counts as one decision), accumulated over an epoch. Keras has sensitivity
    (`Recall`) but no plain specificity at a threshold."""

    def __init__(self, threshold=0.5, name="specificity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.true_negatives = self.add_variable(shape=(), initializer="zeros", name="tn")
        self.negatives = self.add_variable(shape=(), initializer="zeros", name="negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        negative = ops.cast(ops.cast(y_true, "float32") < 0.5, "float32")
        below = ops.cast(ops.cast(y_pred, "float32") < self.threshold, "float32")
        self.true_negatives.assign_add(ops.sum(negative * below))
        self.negatives.assign_add(ops.sum(negative))

    def result(self):
        return ops.where(self.negatives > 0, self.true_negatives / ops.maximum(self.negatives, 1.0), 0.0)

    def reset_state(self):
        self.true_negatives.assign(0.0)
        self.negatives.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


LOSSES = Registry("loss", {"dice_ce": DiceCELoss})


def get_loss(name: str, **kwargs) -> keras.losses.Loss:
    """The loss registered as `name`, built with `kwargs`.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    return LOSSES.lookup(name)(**kwargs)
