from kerasmed.layers.fused_batch_norm import FusedBatchNormalization
from kerasmed.layers.hu_window import HUWindow

__all__ = ["FusedBatchNormalization", "HUWindow"]
