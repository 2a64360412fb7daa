"""Export an ONNX model with tf2onnx (opset 17), with dynamic batch and spatial dimensions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from export.exporters.base_exporter import Exporter, model_io

OPSET = 17


class OnnxExporter(Exporter):
    """Writes `model.onnx`: input `image` `(N, H, W, C)` -> output `probs`, opset 17.

    The batch dimension is always dynamic, and so are the spatial dimensions the model leaves as
    None (all of them for `unet2d`).
    """

    name = "onnx"
    format = "onnx"
    file_name = "model.onnx"

    def __init__(self, opset: int = OPSET):
        self.opset = int(opset)

    def _write(self, model: keras.Model, path: Path, out_dir: Path) -> dict[str, Any]:
        import tf2onnx  # heavy: imported only when exporting ONNX

        input_name, shape, output_name = model_io(model)

        @tf.function
        def serve(image):
            return {output_name: model(image, training=False)}

        tf2onnx.convert.from_function(
            serve,
            input_signature=(tf.TensorSpec(shape, tf.float32, name=input_name),),
            opset=self.opset,
            output_path=str(path),
        )
        return {
            "converter": "tf2onnx",
            "converter_version": tf2onnx.__version__,
            "opset": self.opset,
            "source": f"keras {keras.__version__}, tensorflow {tf.__version__}",
        }
