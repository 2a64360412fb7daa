from kerasmed.layers.ct_normalization import CTNormalization
from kerasmed.layers.fused_batch_norm import FusedBatchNormalization
from kerasmed.layers.hu_window import HUWindow

__all__ = ["CTNormalization", "FusedBatchNormalization", "HUWindow"]
