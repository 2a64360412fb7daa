"""One image through a bundle: the task's result (a mask, labels and probabilities), on a device.

`predict` is what `serving.inference.predict_image` is for segmentation, for every task: the
bundle's task (`serving.tasks`) decides how the model is applied and what its output means, so a
classifier's `(N, C)` output is never pushed through the segmentation inverse.

Example:
    >>> bundle = load_bundle("runs/nodule_cls/bundle")
    >>> predict(bundle, read_image("patch.nii.gz"), artefact="onnx")["labels"]
    ['nodule']
"""

from __future__ import annotations

import os
from typing import Any

from serving.bundle import Bundle, load_bundle
from serving.image import Image
from serving.tasks import runtime_task


def predict(bundle: Bundle | str | os.PathLike, image: Image, artefact: str = "onnx",
            batch_size: int = 8) -> dict[str, Any]:
    """The task's result for `image` from one artefact of a bundle.

    Args:
        bundle: a loaded `Bundle` or its folder (loaded and sha256-verified here).
        image: the raw image (HU for CT), as a reader returns it.
        artefact: the artefact key to run (`onnx`, `tflite`, `saved_model`, `keras`).
        batch_size: slices per runner call (slice models).

    Returns:
        The task's result: segmentation `{"probs", "mask", "probs_preprocessed", "image"}` on the
        source grid; classification `{"labels", "probabilities", "threshold", "activation"}`.

    Raises:
        ConfigError: for an unknown artefact key or task.
        DataError: for an image the task cannot take.
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    task = runtime_task(bundle.task)
    return task.predict(bundle.runner(artefact), image, bundle, batch_size)
