"""`training.deterministic: true`: two runs of one config give bit-identical weights."""

import numpy as np

from kerasmed.training.strategy import op_determinism_enabled
from kerasmed.training.trainer import train
from tests.kerasmed.training.tiny_run import RESUMABLE, model_weights, read_log, tiny_config


def test_two_deterministic_runs_give_identical_weights(tiny_data, reference_run, tmp_path):
    first_dir, first = reference_run
    assert first["deterministic"] and first["dtype_policy"] in ("float32", "mixed_bfloat16")
    second = train(tiny_config(tiny_data, *RESUMABLE), tmp_path / "run", progress=False)

    for a, b in zip(model_weights(first_dir / "model.keras"), model_weights(tmp_path / "run" / "model.keras"),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical, no tolerance
    assert read_log(first_dir / "training_log.csv") == read_log(tmp_path / "run" / "training_log.csv")
    assert second["best_val_dice"] == first["best_val_dice"]
    # Op determinism is process-wide; training switches it back off for the code that follows.
    assert not op_determinism_enabled()
