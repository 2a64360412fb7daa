"""Every registered classifier exports (SavedModel, TFLite fp32, ONNX) and passes parity with the
classification agreement (label agreement, decision flips, AUC difference), at tiny sizes."""

import numpy as np
import pytest

from export.bundle_writer import write_bundle
from export.parity import run_parity
from kerasmed.models.registry import build_model
from serving.image import Image
from serving.preprocessing import PreprocessSpec
from serving.tasks import runtime_task

SPEC = PreprocessSpec((None, None, None), (None, 32, 32), -1024.0)
TINY = {"filters": 4, "depth": 2}


def _cases(n, slices, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        array = rng.normal(-500, 300, (slices, 32, 32)).astype(np.float32)
        array[:, 8:20, 8:20] += 600.0 * (i % 2)  # a bright square in half of them
        out.append((f"case{i}", Image(array, spacing=(2.0, 1.0, 1.0)), np.array([i % 2], float)))
    return out


def _threshold(bundle_dir, cases):
    """The median Keras probability, so that half the golden cases are called positive."""
    from serving.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    task = runtime_task("classification")
    runner = bundle.runner("keras")  # loaded once: each load traces the model again
    probs = [task.apply(runner, image, bundle)[0, -1] for _, image, _ in cases]
    return float(np.median(probs))


def _split_classes(model, cases):
    """Shift the bias of class 1 so that half the cases' arg-max is class 1 (an untrained softmax
    model calls every case the same class, and parity would then have no informative case)."""
    import keras

    from serving.tasks.classification import model_input

    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    x = np.concatenate([model_input(image.array, (None, None, None, image.shape[0]))
                        for _, image, _ in cases])
    values = logits.predict(x, verbose=0)
    margin = values[:, 0] - values[:, 1]
    kernel, bias = model.get_layer("logits").get_weights()
    bias[1] += float(np.median(margin))
    model.get_layer("logits").set_weights([kernel, bias])


@pytest.mark.parametrize("name, kwargs, slices, activation, classes", [
    ("cnn", {"input_shape": (None, None, 3)}, 3, "sigmoid", ["no", "yes"]),
    ("cnn", {"input_shape": (None, None, 1), "num_classes": 3}, 1, "softmax", ["a", "b", "c"]),
    ("resnet", {"input_shape": (None, None, 3)}, 3, "sigmoid", ["no", "yes"]),
    ("resnet", {"input_shape": (None, None, None, 1), "spatial_dims": 3}, 8, "sigmoid", ["yes"]),
    ("transfer", {"input_shape": (None, None, 1), "backbone": "MobileNetV3Small"}, 1, "sigmoid",
     ["no", "yes"]),
])
def test_registered_classifier_exports_and_passes_parity(tmp_path, name, kwargs, slices, activation,
                                                          classes):
    import keras

    keras.utils.set_random_seed(0)
    args = {**TINY, **kwargs} if name != "transfer" else kwargs
    model = build_model(name, **args)
    cases = _cases(6, slices)
    if activation == "softmax":
        _split_classes(model, cases)
    postprocess = {"threshold": 0.5, "activation": activation}
    if activation == "sigmoid":  # export at a threshold that calls half the cases positive
        keras_only = write_bundle(model, tmp_path / "k", name=f"tiny-{name}", task="classification",
                                  class_names=classes, preprocess_spec=SPEC, postprocess=postprocess,
                                  formats=("keras",))
        postprocess["threshold"] = _threshold(keras_only, cases)
    bundle = write_bundle(model, tmp_path / "b", name=f"tiny-{name}", task="classification",
                          class_names=classes, preprocess_spec=SPEC, postprocess=postprocess)
    truths = cases if model.outputs[0].shape[-1] == 1 else [(c, i, None) for c, i, _ in cases]
    result = run_parity(bundle, truths, progress=False)
    assert result.verdict == "pass", result.messages
    assert set(result.artefacts) == {"saved_model", "tflite", "onnx"}
    for artefact in result.artefacts.values():
        assert artefact.task_summary["label_agreement"] == 1.0
        assert artefact.task_summary["decision_flip_rate"] == 0.0
        assert artefact.max_abs_error <= artefact.tolerances.max_abs
        if truths[0][2] is not None:
            assert artefact.task_summary["auc_drop"] == pytest.approx(0.0, abs=1e-6)
    assert len(result.foreground_cases) >= 1  # informative golden cases: a positive decision
    # On a device: the task's result, never a mask (serving.predict, the successor of predict_image).
    from serving.bundle import load_bundle
    from serving.predict import predict

    loaded = load_bundle(bundle)
    answer = predict(loaded, cases[0][1], artefact="onnx")
    keras_probs = runtime_task("classification").apply(loaded.runner("keras"), cases[0][1], loaded)[0]
    assert set(answer) == {"labels", "probabilities", "threshold", "activation"}
    assert np.allclose(sorted(answer["probabilities"].values()), sorted(keras_probs[-len(
        answer["probabilities"]):].tolist()), atol=1e-4)
    assert all(label in classes for label in answer["labels"])
