"""Random 2D augmentation that applies one random draw to an image and its mask.

Stateless TF random ops with an explicit per-example seed, so a pipeline is reproducible and the
image and mask always receive the same flip and rotation.
"""

from __future__ import annotations

import tensorflow as tf


class RandomAugment2D:
    """Flips, 90-degree rotations and intensity jitter for `(H, W, C)` image/mask pairs.

    Args:
        flip: random left-right and up-down flips.
        rot90: random multiples of 90 degrees (patches must be square).
        intensity_shift_hu: image += U(-shift, shift) HU.
        intensity_scale: image *= 1 + U(-scale, scale).

    Example:
        >>> aug = RandomAugment2D()
        >>> ds = ds.map(lambda img, msk, seed: aug(img, msk, seed))
    """

    def __init__(self, flip=True, rot90=True, intensity_shift_hu=20.0, intensity_scale=0.05):
        self.flip = flip
        self.rot90 = rot90
        self.intensity_shift_hu = float(intensity_shift_hu)
        self.intensity_scale = float(intensity_scale)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor):
        """Augment one pair.

        Args:
            image: `(H, W, C)` float32 HU.
            mask: `(H, W, K)` labels; same spatial shape as `image`.
            seed: `(2,)` int64 stateless seed.

        Returns:
            `(image, mask)` with the same geometric transform applied to both.
        """
        image, mask = tf.convert_to_tensor(image), tf.convert_to_tensor(mask)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        # One draw of all geometric parameters, then the same ops on both tensors.
        u = tf.random.stateless_uniform([2], seed=seeds[0])
        k = tf.random.stateless_uniform([], seed=seeds[1], minval=0, maxval=4, dtype=tf.int32)
        jitter = tf.random.stateless_uniform([2], seed=seeds[2], minval=-1.0, maxval=1.0)

        def geometric(x):
            if self.flip:
                x = tf.cond(u[0] < 0.5, lambda: tf.reverse(x, axis=[1]), lambda: x)
                x = tf.cond(u[1] < 0.5, lambda: tf.reverse(x, axis=[0]), lambda: x)
            if self.rot90:
                x = tf.image.rot90(x, k=k)
            return x

        image, mask = geometric(image), geometric(mask)
        image = image * (1.0 + self.intensity_scale * jitter[0]) + self.intensity_shift_hu * jitter[1]
        return image, mask
