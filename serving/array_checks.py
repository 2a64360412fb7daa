"""Checks that an array holds real, finite numbers, so that NaN never passes silently.

One NaN voxel spreads through convolutions and normalisation layers into most of a model's output
(71% of the ONNX and 94% of the TFLite probabilities, as reported in issue 6), and one NaN in a
training volume turns every weight into NaN. Each way an array enters the runtime goes through
these checks once: a runner's inputs (`Runner.run`), `preprocess` (so `predict_image`), and the
files read by `read_image` (so the training cache, evaluation and export). They fail with a
`DataError` that names the array and states what it held, for example::

    Input `image` must be finite. Received: 1 NaN and 0 inf values in a (4, 64, 64, 5) float32 array

A clean array costs one min and one max reduction (a NaN propagates through both, and an
infinity is the min or the max), with no temporary array; the values are counted only for the
error message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.errors import DataError

# numpy dtype kinds of real numbers: bool, signed and unsigned integers, floats. Complex, string,
# bytes, object, datetime and void arrays are refused rather than cast (a cast would drop the
# imaginary part, parse "1.5", or turn None into NaN).
REAL_KINDS = "biuf"
_REAL_RULE = "must be an array of real numbers (bool, int, uint or float)"


def as_real_array(value: Any, what: str) -> np.ndarray:
    """`value` as a numpy array of real numbers, never cast.

    Args:
        value: an array, or anything `np.asarray` turns into one.
        what: how the error names the array, e.g. "Input `image`" or "Image `case_000.nii.gz`".

    Returns:
        `np.asarray(value)`: `value` itself when it already is an array.

    Raises:
        DataError: if `value` is None, not one rectangular array, or its dtype is not bool,
            integer or float (e.g. complex, string, object).
    """
    if value is None:
        raise DataError(f"{what} {_REAL_RULE}. Received: None (dtype=object)")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nesting, or an object numpy cannot hold
        raise DataError(
            f"{what} {_REAL_RULE}. Received: a {type(value).__name__} that is not one array "
            f"({err})"
        ) from err
    if array.dtype.kind not in REAL_KINDS:
        raise DataError(f"{what} {_REAL_RULE}. Received: dtype={array.dtype}")
    return array


def require_finite(array: np.ndarray, what: str) -> None:
    """Refuse an array holding NaN, +inf or -inf.

    Args:
        array: any numpy array; only float arrays can hold non-finite values, so others pass
            without being read.
        what: how the error names the array, e.g. "Input `image`".

    Raises:
        DataError: naming the array, the number of NaN and of infinite values, its shape and
            dtype.
    """
    if array.dtype.kind != "f" or array.size == 0:
        return
    if np.isfinite(array.min()) and np.isfinite(array.max()):
        return
    nan = int(np.count_nonzero(np.isnan(array)))
    inf = int(np.count_nonzero(np.isinf(array)))
    raise DataError(
        f"{what} must be finite. Received: {nan} NaN and {inf} inf values in a "
        f"{tuple(array.shape)} {array.dtype} array"
    )


def finite_real_array(value: Any, what: str) -> np.ndarray:
    """`as_real_array` then `require_finite`: an array of finite real numbers, never cast.

    Args:
        value: an array, or anything `np.asarray` turns into one.
        what: how errors name the array, e.g. "Input `image`".

    Returns:
        `np.asarray(value)`.

    Raises:
        DataError: as `as_real_array` and `require_finite`.
    """
    array = as_real_array(value, what)
    require_finite(array, what)
    return array
