"""Fuzzing the colour DICOM path (`read_image(file)` on RGB, YBR and palette files from pydicom's
shipped test data): every mutation is read or refused with a `KerasmedError`, never a crash, and
a colour result is a well-formed `Image` with its channel axis last."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.serving.fuzzing import N_MUTATIONS, Outcomes, _pick, case_rng, memory_cap, quiet
from tests.serving.test_fuzz import _pydicom_file, dicom_mutation

COLOUR_SEEDS = ("SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
                "SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm")


def _valid_colour_image(image) -> str | None:
    from serving.image import Image

    if not isinstance(image, Image):
        return f"not an Image: {type(image).__name__}"
    array = image.array
    if image.ndim not in (2, 3) or array.size == 0:
        return f"shape {array.shape}"
    if image.channels > 1 and array.shape[-1] != image.channels:
        return f"channels {image.channels} but shape {array.shape}"
    if array.dtype.kind not in "biuf" or not np.isfinite(array.astype(np.float64, copy=False)).all():
        return f"array not finite real numbers (dtype={array.dtype})"
    if not all(math.isfinite(s) and s > 0 for s in image.spacing):
        return f"spacing {image.spacing}"
    return None


@pytest.mark.slow
def test_fuzz_dicom_colour_file(tmp_path, capsys):
    from serving.io import read_image

    seeds = {name: _pydicom_file(name).read_bytes() for name in COLOUR_SEEDS}
    path = tmp_path / "colour.dcm"
    outcomes = Outcomes("dicom-colour")
    with memory_cap(), quiet("pydicom"):
        for i in range(N_MUTATIONS):
            rng = case_rng("dicom-colour", i)
            name = _pick(sorted(seeds), rng)
            data, ops = dicom_mutation(seeds[name], rng)
            path.write_bytes(data)
            outcomes.run(f"dicom-colour#{i} seed={name} ops={ops}", lambda: read_image(path),
                         _valid_colour_image)
    assert outcomes.valid > 0
    outcomes.finish(capsys)
