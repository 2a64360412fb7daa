"""Corpus cases: runner."""

from __future__ import annotations

import re

import numpy as np

from serving.errors import BundleError, ConfigError, DataError
from tests.corpus.harness import (
    CASES,
    Api,
    Case,
    Work,
    case,
)
from tests.helpers import (
    BAD_INPUTS,
    bad_input,
    synthetic_ct,
    tiny_preprocess_spec,
)

# --- runners and predict_image --------------------------------------------------------------------

def _runner_case(fmt: str, bad: str, w: Work) -> Api:
    runner = w.runner(fmt)
    x, received = bad_input(bad, (1, 16, 16, 1))
    return Api(lambda: runner.predict(x), DataError, (re.compile("^Input `image` " + received + "$"),))


for _fmt in ("onnx", "tflite"):
    for _bad in BAD_INPUTS:
        CASES.append(Case(f"runner/{_fmt}-{_bad}", lambda w, f=_fmt, b=_bad: _runner_case(f, b, w)))
for _bad in ("nan", "complex"):
    CASES.append(Case(f"runner/saved_model-{_bad}", lambda w, b=_bad: _runner_case("saved_model", b, w)))


@case("runner/onnx-float64-overflowing-float32")
def _(w):
    runner = w.runner("onnx")
    x = np.zeros((1, 16, 16, 1))
    x[0, 3, 3, 0] = 1e39
    return Api(lambda: runner.predict(x), DataError,
               ("Input `image` cast to float32 must be finite", "Received: 0 NaN and 1 inf values"))


@case("runner/onnx-wrong-rank")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.predict(np.zeros((16, 16, 1), np.float32)), DataError,
               ("Input `image` must have shape (None, None, None, 1)", "Received: shape=(16, 16, 1)"))


@case("runner/tflite-wrong-channels")
def _(w):
    runner = w.runner("tflite")
    return Api(lambda: runner.predict(np.zeros((1, 16, 16, 3), np.float32)), DataError,
               ("Input `image` must have shape", "Received: shape=(1, 16, 16, 3)"))


@case("runner/onnx-unknown-input-name")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.run({"x": np.zeros((1, 16, 16, 1), np.float32)}), DataError,
               ("onnx runner expects inputs ['image']", "Received: ['x']"))


@case("runner/onnx-ragged-input")
def _(w):
    runner = w.runner("onnx")
    return Api(lambda: runner.predict([[1.0, 2.0], [3.0]]), DataError,
               ("Input `image` must be an array of real numbers", "Received: a list that is not one array"))


@case("runner/onnx-garbage-file")
def _(w):
    from serving.runners.registry import make_runner

    path = w.file("model.onnx", b"not a model")
    return Api(lambda: make_runner("onnx", path), BundleError,
               ("onnxruntime could not load the ONNX model", f"Received: path={str(path)!r}"))


@case("runner/tflite-garbage-file")
def _(w):
    from serving.runners.registry import make_runner

    path = w.file("model.tflite", b"not a model" * 10)
    return Api(lambda: make_runner("tflite", path, num_threads=1), BundleError,
               ("LiteRT could not load the TFLite model", f"Received: path={str(path)!r}"))


@case("runner/saved-model-missing")
def _(w):
    from serving.runners.registry import make_runner

    path = w.path / "saved_model"
    path.mkdir()
    return Api(lambda: make_runner("saved_model", path), BundleError,
               ("SavedModel directory must exist and hold saved_model.pb", f"Received: path={str(path)!r}"))


@case("runner/unknown-runtime")
def _(w):
    from serving.runners.registry import make_runner

    return Api(lambda: make_runner("torchscript", w.path / "m.pt"), ConfigError,
               ("Unknown runner `torchscript`; valid names:", "'onnx'", "Received: 'torchscript'"))


def _predict_image_case(w: Work, bad: str) -> Api:
    from serving.inference import predict_image

    runner = w.runner("onnx")
    image = synthetic_ct()
    array, received = bad_input(bad, image.shape)
    if bad in ("nan", "+inf", "-inf"):
        array = image.array.copy()
        array[tuple(n // 2 for n in image.shape)] = np.nan if bad == "nan" else np.inf
        counts = "1 NaN and 0 inf" if bad == "nan" else "0 NaN and 1 inf"
        received = r"must be finite\. Received: " + counts
    bad_image = image.with_array(array)
    return Api(lambda: predict_image(runner, bad_image, tiny_preprocess_spec()), DataError,
               (re.compile("^`image` " + received),))


for _bad in ("nan", "+inf", "complex", "string"):
    CASES.append(Case(f"runner/predict_image-{_bad}", lambda w, b=_bad: _predict_image_case(w, b)))


@case("runner/edge-bundle-nan")
def _(w):
    # The README's edge path end to end: a verified ONNX-only bundle, one NaN voxel in a scan.
    from serving.bundle import load_bundle
    from serving.inference import predict_image

    bundle = load_bundle(w.bundle(), artefacts=["onnx"])
    runner = bundle.runner("onnx", intra_op_num_threads=1)
    image = synthetic_ct()
    array = image.array.copy()
    array[3, 10, 10] = np.nan
    return Api(lambda: predict_image(runner, image.with_array(array), bundle.preprocess_spec), DataError,
               ("`image` must be finite", "Received: 1 NaN and 0 inf values in a (6, 32, 32) float32 array"))


@case("bundle/compare-max-cases-0")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=0), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: 0"))


@case("bundle/compare-max-cases-negative")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=-2), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: -2"))


@case("bundle/compare-max-cases-true")
def _(w):
    from export.run_export import compare_bundle

    bundle = w.bundle()
    return Api(lambda: compare_bundle(bundle, max_cases=True), ConfigError,
               ("`max_cases` must be an integer >= 1 or None", "Received: True"))


@case("bundle/compare-report-folder-is-a-file")
def _(w):
    from export.run_export import compare_bundle

    report = w.file("report.md", "mine")
    return Api(lambda: compare_bundle(w.path / "no_bundle", out_dir=report), ConfigError,
               ("`out_dir` (the report folder) must be a folder", f"Received: {report} is a file"))
