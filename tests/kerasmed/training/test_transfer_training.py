"""Transfer learning through `kerasmed train`: a backbone from a local weights file, phase 1 with
the backbone frozen, phase 2 fine-tuning its top block at a lower learning rate.

The model-level rules (which weights each phase may change) are in
`tests/kerasmed/models/test_transfer.py`; here the trainer runs both phases from a config."""

import keras
import numpy as np
import pandas as pd

from kerasmed.config import load_config
from kerasmed.models.transfer import backbone_blocks
from kerasmed.tasks import training_task
from tests.kerasmed.test_classification_e2e import CONFIGS


def test_two_phase_schedule_from_a_local_weights_file(tmp_path, capsys):
    from kerasmed.training.trainer import train

    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False,
                                                   weights=None, include_preprocessing=True)
    weights = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    backbone.save_weights(weights)
    config = load_config(CONFIGS / "nodule_cls.yaml", [
        f"data.root={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}",
        "synthetic.num_cases=6", "synthetic.patches_per_case=8", "synthetic.shape=[32,192,192]",
        "preprocessing.size=[null,32,32]", "model.name=transfer", "model.backbone=MobileNetV3Small",
        f"model.weights={weights}", "model.context_slices=1", "training.epochs=1",
        "training.steps_per_epoch=3", "sampling.batch_size=8", "classification.fine_tune_epochs=1",
        "classification.fine_tune_blocks=1", "classification.fine_tune_learning_rate=1e-4",
    ])
    training_task(config.task).generate(config, config.data.root, progress=False)
    summary = train(config, progress=False)
    assert "phase 2: fine-tuning at learning rate 0.0001" in capsys.readouterr().out
    log = pd.read_csv(config.run_dir() / "training_log.csv")
    assert log["epoch"].tolist() == [0, 1] and summary["epochs_run"] == 2
    model = keras.saving.load_model(config.run_dir() / "model.keras", compile=False)
    trained = model.get_layer("backbone")
    original = {"/".join(w.path.split("/")[-2:]): w.numpy() for w in backbone.weights}
    blocks = backbone_blocks(model)
    frozen = {name for block in blocks[:-1] for name in block}  # every block but the top one
    compared = 0
    for w in trained.weights:
        layer = w.path.split("/")[-2]
        key = "/".join(w.path.split("/")[-2:])
        if layer in frozen or "moving" in w.path:  # BN statistics never move, in either phase
            np.testing.assert_array_equal(w.numpy(), original[key], err_msg=w.path)
            compared += 1
    assert compared > 50
