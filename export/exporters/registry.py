"""Exporter name -> class. Adding a format means one file and one line here."""

from __future__ import annotations

from export.exporters.base_exporter import Exporter
from export.exporters.keras_file import KerasFileExporter
from export.exporters.onnx import OnnxExporter
from export.exporters.saved_model import SavedModelExporter
from export.exporters.tflite import TFLiteExporter
from serving.registry import Registry

# Order matters when several are exported together: tflite converts the saved_model written
# before it.
EXPORTERS = Registry("export format", {
    "keras": KerasFileExporter,
    "saved_model": SavedModelExporter,
    "tflite": TFLiteExporter,
    "onnx": OnnxExporter,
})


def get_exporter(name: str, **kwargs) -> Exporter:
    """Build the exporter registered as `name`.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    return EXPORTERS.lookup(name)(**kwargs)
