"""A serialisable intensity-window layer: raw Hounsfield units in, [0, 1] out.

It is the first layer of every CT model, so every exported artefact (SavedModel, TFLite, ONNX)
takes raw HU and there is no second copy of intensity normalisation to drift.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmed")
class HUWindow(keras.layers.Layer):
    """Clip to `[low, high]` HU and scale linearly to `[0, 1]`.

    Args:
        low: lower window bound in HU (e.g. -1000 for lung).
        high: upper window bound in HU (e.g. 400).
        **kwargs: passed to `keras.layers.Layer`.

    Input shape: any, e.g. `(N, H, W, 1)` float HU. Output shape: the same, in the layer's
    compute dtype.

    Example:
        >>> x = keras.Input((None, None, 1), name="image")
        >>> y = HUWindow(-1000.0, 400.0)(x)
    """

    def __init__(self, low=-1000.0, high=400.0, **kwargs):
        super().__init__(**kwargs)
        low, high = float(low), float(high)
        if not high > low:
            raise ValueError(f"`high` must be greater than `low`. Received: low={low}, high={high}")
        self.low = low
        self.high = high

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return (ops.clip(x, self.low, self.high) - self.low) / (self.high - self.low)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"low": self.low, "high": self.high})
        return config
