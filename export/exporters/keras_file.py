"""Export the Keras model itself (`model.keras`): the parity reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from export.exporters.base_exporter import Exporter


class KerasFileExporter(Exporter):
    """Saves `model.keras` (architecture, weights; no optimizer state)."""

    name = "keras"
    format = "keras"
    file_name = "model.keras"

    def _write(self, model: keras.Model, path: Path, out_dir: Path) -> dict[str, Any]:
        model.save(path, include_optimizer=False)
        return {"converter": "keras", "converter_version": keras.__version__}
