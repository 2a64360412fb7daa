"""Random 2D augmentation that applies one random draw to an image and its mask.

Plain numpy driven by a per-example `numpy.random.Generator`, so it runs inside the pipeline's
batched crop (one Python call per batch, not a dozen TF ops per patch) and a pipeline stays
reproducible: the same seed gives the same flip, rotation and intensity jitter on image and mask.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RandomAugment2D:
    """Flips, 90-degree rotations and intensity jitter for `(H, W, C)` image/mask pairs.

    Args:
        flip: random left-right and up-down flips.
        rot90: random multiples of 90 degrees (patches must be square).
        intensity_offset: image += U(-offset, offset), in the image's raw units (HU for CT);
            from a config, `kerasmed.data.intensity.input_shift` (a fraction of the model's
            intensity unit).
        intensity_scale: image *= 1 + U(-scale, scale), applied before the offset.

    Example:
        >>> aug = RandomAugment2D()
        >>> image, mask = aug(image, mask, np.random.default_rng(seed))
    """

    def __init__(self, flip=True, rot90=True, intensity_offset=20.0, intensity_scale=0.05):
        self.flip = flip
        self.rot90 = rot90
        self.intensity_offset = float(intensity_offset)
        self.intensity_scale = float(intensity_scale)

    def draw(self, rng: np.random.Generator) -> Draw:
        """One random transform. All five numbers are always drawn, so turning one augmentation
        off leaves the others' draws unchanged."""
        flips, k, (scale, shift) = rng.random(2), int(rng.integers(4)), rng.uniform(-1.0, 1.0, 2)
        return Draw(
            flip_x=self.flip and flips[0] < 0.5,
            flip_y=self.flip and flips[1] < 0.5,
            quarter_turns=k if self.rot90 else 0,
            gain=np.float32(1.0 + self.intensity_scale * scale),
            offset=np.float32(self.intensity_offset * shift),
        )

    @staticmethod
    def geometry(x: np.ndarray, draw: Draw, axes=(0, 1)) -> np.ndarray:
        """`x` flipped and rotated on its two spatial `axes` (rows, columns) as `draw` says; a view."""
        rows, cols = axes
        if draw.flip_x:
            x = np.flip(x, cols)
        if draw.flip_y:
            x = np.flip(x, rows)
        return np.rot90(x, draw.quarter_turns, axes=axes) if draw.quarter_turns else x

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        """Augment one pair.

        Args:
            image: `(H, W, C)` float32 raw intensities (HU for CT).
            mask: `(H, W, K)` labels; same spatial shape as `image`.
            rng: the example's generator (its draws decide the transform).

        Returns:
            `(image, mask)`, contiguous float32, with the same geometric transform applied to both.
        """
        draw = self.draw(rng)
        image, mask = self.geometry(image, draw), self.geometry(mask, draw)
        # A C-ordered copy in one pass whatever the view's strides (flips and rotations are views).
        image = np.multiply(image, draw.gain, dtype=np.float32, order="C")
        image += draw.offset
        return image, np.ascontiguousarray(mask, np.float32)


class Draw(NamedTuple):
    """One random transform of `RandomAugment2D`."""

    flip_x: bool
    flip_y: bool
    quarter_turns: int
    gain: np.float32
    offset: np.float32
