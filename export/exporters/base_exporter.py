"""The Exporter interface: one class per artefact format, each writing one file or folder."""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import keras

from serving.bundle import artefact_sha256
from serving.errors import ConfigError


def model_io(model: keras.Model) -> tuple[str, tuple[int | None, ...], str]:
    """Input name, input shape (batch None) and output name of a single-input/output model.

    Raises:
        ConfigError: if the model does not have exactly one input and one output.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(
            "Exporters need a model with exactly one input and one output (the bundle contract "
            f"`image` -> `probs`). Received: {len(model.inputs)} inputs, "
            f"{len(model.outputs)} outputs"
        )
    (tensor,) = model.inputs
    shape = (None,) + tuple(None if d is None else int(d) for d in tensor.shape[1:])
    return tensor.name, shape, model.output_names[0]


class Exporter(abc.ABC):
    """Writes one artefact of a float32 Keras model into a bundle folder.

    Subclasses set `name` (registry and artefact key), `format` (runner name), `precision` and
    `file_name`, and implement `_write`.

    Example:
        >>> entry = OnnxExporter().export(model, "bundle_tmp")
        >>> entry["file"], entry["opset"]
        ('model.onnx', 17)
    """

    name: str = ""
    format: str = ""
    precision: str = "fp32"
    file_name: str = ""

    @abc.abstractmethod
    def _write(self, model: keras.Model, path: Path, out_dir: Path) -> dict[str, Any]:
        """Write the artefact at `path` (inside `out_dir`).

        Returns:
            Converter facts for the manifest, e.g. `{"converter": "tf2onnx",
            "converter_version": "1.17.0", "opset": 17}`.
        """

    def export(self, model: keras.Model, out_dir: str | os.PathLike) -> dict[str, Any]:
        """Write the artefact into `out_dir` and describe it.

        Args:
            model: a float32 Keras model, `image` `(N, H, W, C)` -> `probs` `(N, H, W, K)`.
            out_dir: existing folder receiving `self.file_name`.

        Returns:
            The manifest entry: key, format, precision, file, sha256, converter,
            converter_version and any format-specific facts (opset, signature).
        """
        out_dir = Path(out_dir)
        if not out_dir.is_dir():
            raise ConfigError(f"`out_dir` must be an existing folder. Received: {str(out_dir)!r}")
        path = out_dir / self.file_name
        facts = self._write(model, path, out_dir)
        return {
            "key": self.name,
            "format": self.format,
            "precision": self.precision,
            "file": self.file_name,
            "sha256": artefact_sha256(path),
            **facts,
        }
