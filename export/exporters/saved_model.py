"""Export a TensorFlow SavedModel with one named serving signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from export.exporters.base_exporter import Exporter, model_io

SIGNATURE = "serving_default"


class SavedModelExporter(Exporter):
    """Writes `saved_model/` with signature "serving_default": `image` -> `{"probs": ...}`.

    The signature keeps the model's input name and returns a dict keyed by its output name, so
    the SavedModel, TFLite (converted from it) and ONNX artefacts share tensor names.
    """

    name = "saved_model"
    format = "saved_model"
    file_name = "saved_model"

    def _write(self, model: keras.Model, path: Path, out_dir: Path) -> dict[str, Any]:
        input_name, shape, output_name = model_io(model)

        def serve(image):
            return {output_name: model(image, training=False)}

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name=SIGNATURE,
            fn=serve,
            input_signature=[keras.InputSpec(shape=shape, dtype="float32", name=input_name)],
        )
        archive.write_out(str(path), verbose=False)
        return {
            "converter": "keras.export.ExportArchive",
            "converter_version": f"keras {keras.__version__}, tensorflow {tf.__version__}",
            "signature": SIGNATURE,
        }
