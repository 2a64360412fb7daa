"""nnU-Net's CT normalisation as a serialisable layer: raw intensities in, z-scores out.

The clip window and the z-score come from the dataset fingerprint
(`kerasmed.data.fingerprint.ct_normalization`) and are stored in the layer's config, so every
exported artefact (SavedModel, TFLite, ONNX) takes raw intensities and carries the same numbers.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmed")
class CTNormalization(keras.layers.Layer):
    """Clip to `[low, high]`, then z-score: `(clip(x, low, high) - mean) / std`.

    Args:
        low: lower clip bound, e.g. the foreground's 0.5 percentile in HU.
        high: upper clip bound, e.g. the foreground's 99.5 percentile; `high >= low`.
        mean: foreground mean intensity.
        std: foreground intensity standard deviation; must be > 0.
        **kwargs: passed to `keras.layers.Layer`.

    Input shape: any, e.g. `(N, H, W, C)` float raw intensities. Output shape: the same, in the
    layer's compute dtype.

    Example:
        >>> x = keras.Input((None, None, 1), name="image")
        >>> y = CTNormalization(-1000.0, 300.0, mean=-420.0, std=310.0)(x)
    """

    def __init__(self, low, high, mean, std, **kwargs):
        super().__init__(**kwargs)
        low, high, mean, std = float(low), float(high), float(mean), float(std)
        if not all(map(math.isfinite, (low, high, mean, std))):
            raise ValueError("`low`, `high`, `mean` and `std` must be finite. "
                             f"Received: low={low}, high={high}, mean={mean}, std={std}")
        if not high >= low:
            raise ValueError(f"`high` must be >= `low`. Received: low={low}, high={high}")
        if not std > 0:
            raise ValueError(f"`std` must be > 0 to z-score. Received: std={std}")
        self.low, self.high, self.mean, self.std = low, high, mean, std

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return (ops.clip(x, self.low, self.high) - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"low": self.low, "high": self.high, "mean": self.mean, "std": self.std})
        return config
