import numpy as np
import pytest

from serving.errors import DataError
from serving.image import Image
from serving.inference import (
    predict_batches,
    predict_image,
    predict_slices,
    probs_to_mask,
    slice_batches,
    slice_stack,
)
from serving.preprocessing import PreprocessSpec
from serving.runners.base_runner import Runner, TensorSpec
from tests.helpers import BAD_INPUTS, bad_input


class CentreMinusMean(Runner):
    """A stand-in model: probability = sigmoid(centre channel - mean of channels)."""

    format = "numpy"

    def __init__(self, context):
        self.context = context

    input_specs = property(lambda self: [TensorSpec("image", (None, None, None, self.context), "float32")])
    output_specs = property(lambda self: [TensorSpec("probs", (None, None, None, 1), "float32")])
    provider = property(lambda self: "numpy")

    def _run(self, inputs):
        x = inputs["image"]
        c = x[..., self.context // 2 : self.context // 2 + 1]
        return {"probs": 1 / (1 + np.exp(-(c - x.mean(-1, keepdims=True))))}


def test_slice_stack_centres_and_repeats_edges():
    volume = np.arange(5)[:, None, None] * np.ones((5, 2, 3))
    stack = slice_stack(volume, [0, 2, 4], 3)
    assert stack.shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(stack[:, 0, 0], [[0, 0, 1], [1, 2, 3], [3, 4, 4]])
    with pytest.raises(DataError, match="odd"):
        slice_stack(volume, [0], 2)


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_slice_stack_is_a_contiguous_channels_last_gather(dtype):
    volume = np.random.default_rng(1).normal(size=(6, 5, 4)).astype(dtype)
    centres = np.array([0, 3, 5])
    index = np.clip(centres[:, None] + np.arange(5)[None, :] - 2, 0, 5)
    stack = slice_stack(volume, centres, 5)
    # The former definition, a gather then a transpose, bit for bit.
    np.testing.assert_array_equal(stack, np.moveaxis(volume[index], 1, -1))
    assert stack.dtype == dtype and stack.flags.c_contiguous


def test_slice_batches_cover_every_slice_in_order():
    volume = np.random.default_rng(2).normal(size=(7, 4, 4))  # float64 in, float32 out
    batches = list(slice_batches(volume, 3, batch_size=3))
    assert [b.shape for b in batches] == [(3, 4, 4, 3), (3, 4, 4, 3), (1, 4, 4, 3)]
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(
        np.concatenate(batches), slice_stack(volume.astype(np.float32), np.arange(7), 3)
    )
    with pytest.raises(DataError, match="batch_size=0"):
        list(slice_batches(volume, 3, batch_size=0))
    with pytest.raises(DataError, match=r"Received: shape=\(4, 4\)"):
        list(slice_batches(volume[0], 3))


def test_predict_batches_equals_predict_slices():
    volume = np.random.default_rng(3).normal(size=(9, 8, 8)).astype(np.float32)
    runner = CentreMinusMean(3)
    expected = predict_slices(runner, volume, 4)
    np.testing.assert_array_equal(predict_batches(runner, slice_batches(volume, 3, 4)), expected)
    with pytest.raises(DataError, match="at least one batch"):
        predict_batches(runner, [])


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_predict_slices_matches_direct_run_for_any_batch_size(batch_size):
    volume = np.random.default_rng(0).normal(size=(7, 8, 8)).astype(np.float32)
    runner = CentreMinusMean(5)
    expected = runner.predict(slice_stack(volume, np.arange(7), 5))
    np.testing.assert_allclose(predict_slices(runner, volume, batch_size), expected, atol=1e-7)


def test_predict_image_returns_source_geometry():
    image = Image(np.zeros((4, 30, 20), np.float32), spacing=(2.5, 1.0, 1.0))
    probs_src, probs_pre, record = predict_image(
        CentreMinusMean(3), image, PreprocessSpec((None, 2.0, 2.0), (None, 16, 16))
    )
    assert probs_pre.shape == (4, 16, 16, 1) and probs_src.shape == (4, 30, 20, 1)
    np.testing.assert_allclose(probs_src, 0.5, atol=1e-6)  # flat image -> sigmoid(0)
    assert probs_to_mask(probs_src).dtype == np.uint8


class MustNotRun(CentreMinusMean):
    """A stand-in model that fails the test if any input reaches it."""

    def _run(self, inputs):
        raise AssertionError("the runner was called on an input that must be refused")


# An Image cannot hold None itself (its array must be 2D or 3D); "object" is an array of None.
@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if c != "none"])
def test_predict_image_refuses_a_non_finite_or_non_real_image(case):
    array, received = bad_input(case, (4, 30, 20))
    image = Image(array, spacing=(2.5, 1.0, 1.0))
    with pytest.raises(DataError, match="^`image` " + received + "$"):
        predict_image(MustNotRun(3), image, PreprocessSpec((None, 2.0, 2.0), (None, 16, 16)))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_predict_slices_refuses_bad_volumes(case):
    volume, received = bad_input(case, (3, 8, 8))
    if case in ("nan", "+inf", "-inf"):
        # A preprocessed volume never went through `preprocess`'s check: the runner refuses the
        # first batch holding one, so the error names the input and counts what that batch holds.
        with pytest.raises(
            DataError,
            match=r"^Input `image` must be finite\. Received: [01] NaN and [01] inf values in a "
            r"\(1, 8, 8, 1\) float32 array$",
        ):
            predict_slices(CentreMinusMean(1), volume, batch_size=1)
    else:
        with pytest.raises(DataError, match="^`volume` " + received + "$"):
            predict_slices(MustNotRun(1), volume, batch_size=1)


def test_probs_to_mask_threshold_and_argmax():
    p = np.array([[0.2], [0.5], [0.9]])
    np.testing.assert_array_equal(probs_to_mask(p, 0.5), [0, 1, 1])
    q = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_array_equal(probs_to_mask(q), [0, 2])
