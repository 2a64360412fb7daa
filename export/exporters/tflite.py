"""Export an fp32 TFLite model, converted from the SavedModel."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from export.exporters.base_exporter import Exporter
from export.exporters.saved_model import SIGNATURE, SavedModelExporter
from serving.errors import ConfigError


class TFLiteExporter(Exporter):
    """Writes `model.tflite` (fp32) with signature "serving_default".

    Converts the SavedModel written just before it into the same folder (the bundle writer exports
    `saved_model` first), so both artefacts come from one graph; without one it writes a temporary
    SavedModel. Batch and spatial dimensions stay dynamic (shape signature `[-1, -1, -1, C]`).
    """

    name = "tflite"
    format = "tflite"
    file_name = "model.tflite"

    def _write(self, model: keras.Model, path: Path, out_dir: Path) -> dict[str, Any]:
        saved = out_dir / SavedModelExporter.file_name
        if (saved / "saved_model.pb").is_file():
            flatbuffer = self._convert(saved)
        else:
            with tempfile.TemporaryDirectory(prefix="kerasmed-tflite-") as tmp:
                SavedModelExporter().export(model, tmp)
                flatbuffer = self._convert(Path(tmp) / SavedModelExporter.file_name)
        path.write_bytes(flatbuffer)
        return {
            "converter": "tf.lite.TFLiteConverter.from_saved_model",
            "converter_version": f"tensorflow {tf.__version__}",
            "signature": SIGNATURE,
        }

    @staticmethod
    def _convert(saved_model_dir: Path) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model_dir), signature_keys=[SIGNATURE]
        )
        try:
            return converter.convert()
        except Exception as err:  # the converter raises ConverterError and plain exceptions
            raise ConfigError(
                "The model must convert to TFLite with dynamic batch and spatial dimensions "
                "(e.g. use Conv2DTranspose, not UpSampling2D). Received: "
                f"{type(err).__name__}: {err}"
            ) from err
