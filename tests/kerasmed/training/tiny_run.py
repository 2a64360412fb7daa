"""The tiny training setup shared by these tests: the `tiny` profile of `kerasmed demo`."""

from pathlib import Path

from export.demo import PROFILES
from kerasmed.config import load_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "lung_nodule_seg_2d.yaml"
# Three epochs so that a run can be interrupted after one and still have work left.
RESUMABLE = ("training.deterministic=true", "training.epochs=3")


def tiny_overrides(data_root, *extra) -> list[str]:
    """`--set` overrides of the tiny profile on the dataset at `data_root`, then `extra`."""
    return [*PROFILES["tiny"], f"data.root={data_root}", "data.cache_dir=null", *extra]


def tiny_config(data_root, *extra):
    return load_config(CONFIG, tiny_overrides(data_root, *extra))


def model_weights(path) -> list:
    import keras

    import kerasmed.layers.hu_window  # noqa: F401 - registers HUWindow for load_model

    return keras.saving.load_model(path, compile=False).get_weights()


def read_log(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
