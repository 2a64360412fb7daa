"""Shared test helpers."""

import re

import numpy as np
import pytest


def assert_allclose(actual, desired, atol=1e-5, rtol=0.0, err_msg=""):
    """`np.testing.assert_allclose` with the project's default tolerances (atol 1e-5, rtol 0).

    A call site that loosens them says why in a comment (e.g. TFLite fp16).
    """
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), atol=atol, rtol=rtol,
                               err_msg=err_msg)


# Inputs every entry point must refuse rather than compute NaN from or cast: see
# `serving.array_checks`. "none" is None itself; "object" is an array of None.
BAD_INPUTS = ("nan", "+inf", "-inf", "complex", "string", "none", "object")


def bad_input(case: str, shape: tuple[int, ...]):
    """A value of `shape` (zeros, float32, unless the case changes that) to be refused.

    Args:
        case: one of `BAD_INPUTS`. "nan" and "+inf" put one bad value in the middle voxel, "-inf"
            two (so the count is checked, not only its presence).
        shape: the array's shape.

    Returns:
        `(value, received)`: `received` is a regex of the rule and what the error must say was
        received, after the array's name (e.g. "Input `image` ").
    """
    x = np.zeros(shape, np.float32)
    middle = tuple(n // 2 for n in shape)
    in_a = re.escape(f" values in a {shape} float32 array")
    if case == "nan":
        x[middle] = np.nan
        return x, r"must be finite\. Received: 1 NaN and 0 inf" + in_a
    if case == "+inf":
        x[middle] = np.inf
        return x, r"must be finite\. Received: 0 NaN and 1 inf" + in_a
    if case == "-inf":
        x.flat[[0, -1]] = -np.inf
        return x, r"must be finite\. Received: 0 NaN and 2 inf" + in_a
    real = r"must be an array of real numbers \(bool, int, uint or float\)\. Received: "
    if case == "complex":
        return x.astype(np.complex64), real + "dtype=complex64"
    if case == "string":
        return np.full(shape, "1.5"), real + "dtype=<U3"
    if case == "none":
        return None, real + r"None \(dtype=object\)"
    if case == "object":
        return np.full(shape, None, dtype=object), real + "dtype=object"
    raise ValueError(f"`case` must be one of {BAD_INPUTS}. Received: {case!r}")


# Tiny model, synthetic CT and a shared bundle for the export/serving tests. Keras and `export`
# are imported inside the functions so that importing this module stays TensorFlow-free.
TINY_SPACING = (2.5, 0.8, 0.8)


def tiny_unet(seed: int = 0, **kwargs):
    """`unet2d(filters=4, depth=2)` with seeded random weights: `image` (N,H,W,1) -> `probs`."""
    import keras

    from kerasmed.models.unet import unet2d

    keras.utils.set_random_seed(seed)
    return unet2d(**{"filters": 4, "depth": 2, **kwargs})


def synthetic_ct(seed: int = 0, shape=(6, 32, 32), spacing=TINY_SPACING):
    """A raw-HU `Image`: air, a soft-tissue disc, and a bright blob, plus noise."""
    from serving.image import Image

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    cy, cx = shape[1] / 2, shape[2] / 2
    body = ((y - cy) / (0.42 * shape[1])) ** 2 + ((x - cx) / (0.45 * shape[2])) ** 2 <= 1
    array = np.where(body, 40.0, -1000.0).astype(np.float32)
    by, bx = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
    blob = (y - by) ** 2 + (x - bx) ** 2 + (2 * (z - shape[0] / 2)) ** 2 <= 16
    array[blob] = 250.0
    array += rng.normal(0.0, 20.0, shape).astype(np.float32)
    return Image(array, spacing, modality="CT")


def tiny_preprocess_spec():
    """Resample y/x to 1 mm and centre-crop/pad to 32 x 32 (a multiple of 2**depth)."""
    from serving.preprocessing import PreprocessSpec

    return PreprocessSpec(target_spacing=(None, 1.0, 1.0), size=(None, 32, 32))


def write_tiny_bundle(out_dir, model=None, formats=("keras", "saved_model", "tflite", "onnx")):
    """Write a bundle of `tiny_unet()` (or `model`) to `out_dir` and return its path."""
    from export.bundle_writer import write_bundle

    return write_bundle(
        model if model is not None else tiny_unet(),
        out_dir,
        name="tiny-unet",
        class_names=["background", "nodule"],
        preprocess_spec=tiny_preprocess_spec(),
        postprocess={"threshold": 0.5, "min_component_voxels": 0},
        formats=formats,
        extra={"purpose": "tests"},
    )


_SHARED: dict = {}


def shared_bundle(tmp_path_factory):
    """One tiny bundle (all four formats) per test session, built on first use. Do not modify
    it: copy it first (`copy_bundle`)."""
    if "bundle" not in _SHARED:
        _SHARED["bundle"] = write_tiny_bundle(tmp_path_factory.mktemp("shared") / "bundle")
    return _SHARED["bundle"]


def copy_bundle(src, dst):
    """A writable copy of a bundle folder (returns its Path)."""
    import shutil
    from pathlib import Path

    return Path(shutil.copytree(src, dst))


def folder_digest(folder) -> dict:
    """`{relative path: sha256}` of every file under `folder` (to prove nothing changed)."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kerasmed_process(*args, cwd=None, timeout=300, preexec_fn=None, env=None):
    """Run the installed `kerasmed` console command as a user types it; returns the result
    (`preexec_fn`: run in the child before the command starts, e.g. to set a resource limit;
    `env`: variables added to this process's environment)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).parent / "kerasmed"
    return subprocess.run([str(command), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
                          preexec_fn=preexec_fn)


def kerasmed_in_process(capfd, *args):
    """`kerasmed ARGS` through `kerasmed.cli.main` in this process (no 12 s TensorFlow import),
    with what it printed: a `CompletedProcess` like `kerasmed_process`'s. The installed command
    itself is run as a process by test_cli_processes and the README tests."""
    import subprocess

    from kerasmed.cli import main

    capfd.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse
        code = exit.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_one_line_error(proc, *needles):
    """A user error as the CLI contract says: exit code 2, one stderr line, no traceback, and
    every one of `needles` in that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def tree_snapshot(folder) -> dict:
    """`{relative path: state}` of everything under `folder`, symlinks not followed.

    A file's state is its sha256, a folder's "folder" and a symlink's "-> target". Unlike
    `folder_digest` it also sees a folder created or deleted (e.g. an empty run folder left by a
    refused command, or a temporary folder left behind) and a symlink swapped for another.
    """
    import hashlib
    import os
    from pathlib import Path

    folder = Path(folder)
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not enter linked folders
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                state[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                state[rel] = "folder"
            else:
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def changes_outside(before: dict, after: dict, outputs=()) -> list[str]:
    """Paths whose `tree_snapshot` state differs (created, deleted or changed), except those at
    or under one of `outputs` (relative paths a command may write)."""
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    return [p for p in changed if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in outputs)]


def assert_refused_in_one_line(call, error, prefix: str) -> str:
    """`call()` raises `error` whose message is one line, starts with `prefix` and says what it
    received; returns the message."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(prefix)
    assert "Received: " in message
    return message


def varied_hu(shape, seed: int = 0) -> np.ndarray:
    """`(N, ...)` float32 HU images that differ from each other as real ones do: each has its own
    level (-900 to 300 HU) and texture."""
    rng = np.random.default_rng(seed)
    levels = rng.permutation(np.linspace(-900.0, 300.0, shape[0]))
    levels = levels.reshape((-1,) + (1,) * (len(shape) - 1))
    return (levels + rng.normal(0.0, 200.0, shape)).astype(np.float32)


def train_briefly(model, x, epochs: int = 10, spread: float = 0.15, rounds: int = 6) -> None:
    """Fit a classifier on `x` (labels: each image's level rank, as classes) until its
    probabilities spread, so that a 1e-4 parity comparison means something, with the weights
    training gives rather than a head rescaled by hand.

    A random network's logits differ little from image to image: spreading them by rescaling the
    head took gains up to 1,458 on noise images (up to 5e10 for a random keras.applications
    backbone on these), which multiply the fp32 rounding below the head as much: on an AVX2-only
    CPU a random 3D ResNet so rescaled differed
    from its ONNX and TFLite artefacts by 1.3e-4, while they agreed with each other to 3e-5. That
    measures a contrived graph, not the exporter: the parity gate is for trained models.
    """
    import keras

    classes = int(model.output_shape[-1])
    rank = np.argsort(np.argsort(x.reshape(len(x), -1).mean(axis=1)))
    y = (rank * max(classes, 2) // len(x)).astype(np.int64)
    if classes == 1:
        loss, y = "binary_crossentropy", y.astype(np.float32)[:, None]
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-2), loss)
    for _ in range(rounds):  # `epochs` at a time, until the probabilities' std reaches `spread`
        model.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0, shuffle=False)
        if np.asarray(model(x, training=False)).std() >= spread:
            return
