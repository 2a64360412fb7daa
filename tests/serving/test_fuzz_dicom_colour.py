"""Fuzzing the colour DICOM path (`read_image(file)` on RGB, YBR and palette files from pydicom's
shipped test data): every mutation is read or refused with a `KerasmedError`, never a crash, and
a result is a well-formed `Image` (the fuzzers' one check), its channel axis last."""

from __future__ import annotations

import pytest

from tests.serving.fuzzing import N_MUTATIONS, Outcomes, _pick, case_rng, memory_cap, quiet
from tests.serving.test_fuzz import _pydicom_file, _valid_image, dicom_mutation

COLOUR_SEEDS = ("SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
                "SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm")


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
                         _valid_image)
    assert outcomes.valid > 0
    outcomes.finish(capsys)
