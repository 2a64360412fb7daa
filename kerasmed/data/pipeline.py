"""tf.data pipelines over the preprocessed cache: balanced 2D patch sampling and validation slices.

Training: pick positive (contains foreground) and negative slices with a fixed mix, crop a patch
(centred near a random foreground pixel for positives, anywhere for negatives), augment image and
mask with one random draw, shuffle, batch and prefetch. Validation: whole slices, fixed order.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import ndimage

from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.cache import CachedCase
from serving.errors import ConfigError, DataError
from serving.inference import slice_stack


class SliceSampler:
    """Crops 2D patches from memory-mapped cached volumes (numpy, called through tf.numpy_function).

    Args:
        cases: cached cases of one split.
        context: odd number of neighbouring slices per example (channels), as the model takes.
        patch_size: `(h, w)` patch size; must fit inside the cached slices.
    """

    def __init__(self, cases: list[CachedCase], context: int, patch_size):
        if not cases:
            raise DataError("No cached cases to sample from. Received: 0 cases")
        self.cases = cases
        self.context = int(context)
        self.patch = tuple(int(p) for p in patch_size)
        h, w = cases[0].image.shape[1:]
        if self.patch[0] > h or self.patch[1] > w:
            raise ConfigError(
                f"`sampling.patch_size` must fit in the preprocessed slice {(h, w)}. "
                f"Received: patch_size={self.patch}"
            )
        pos, neg = [], []
        for ci, case in enumerate(cases):
            mask = np.asarray(case.mask)
            has_fg = mask.reshape(mask.shape[0], -1).any(axis=1)
            neg.extend((ci, zi) for zi in np.flatnonzero(~has_fg))
            pos.extend((ci, zi) for zi in _lesion_balanced_slices(mask))
        self.positive = np.array(pos, dtype=np.int64).reshape(-1, 2)
        self.negative = np.array(neg, dtype=np.int64).reshape(-1, 2)

    def crop(self, case_index, slice_index, positive, seed):
        rng = np.random.default_rng(np.asarray(seed, dtype=np.uint64))
        case = self.cases[int(case_index)]
        image = slice_stack(case.image, [int(slice_index)], self.context)[0].astype(np.float32)
        mask = np.asarray(case.mask[int(slice_index)], dtype=np.float32)
        (ph, pw), (h, w) = self.patch, mask.shape
        if positive:
            fg = np.argwhere(mask > 0)
            cy, cx = fg[rng.integers(len(fg))]
            # Jitter so the lesion is not always at the patch centre.
            cy += rng.integers(-ph // 4, ph // 4 + 1)
            cx += rng.integers(-pw // 4, pw // 4 + 1)
            y0, x0 = int(np.clip(cy - ph // 2, 0, h - ph)), int(np.clip(cx - pw // 2, 0, w - pw))
        else:
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        return image[y0 : y0 + ph, x0 : x0 + pw], mask[y0 : y0 + ph, x0 : x0 + pw, None]


def _lesion_balanced_slices(mask: np.ndarray, max_repeat: int = 16) -> list[int]:
    """Positive slice indices, repeated so that every 3D lesion is drawn about equally often.

    Uniform sampling over positive slices favours a 30 mm nodule spanning 12 slices over a 5 mm one
    spanning 2 by 6 to 1; small nodules are the hard ones, so each connected lesion gets the same
    share (within `max_repeat`).
    """
    labels, _ = ndimage.label(mask > 0)
    per_lesion = [np.arange(box[0].start, box[0].stop) for box in ndimage.find_objects(labels)]
    if not per_lesion:
        return []
    longest = max(len(z) for z in per_lesion)
    out: list[int] = []
    for slices in per_lesion:
        out.extend(np.repeat(slices, min(max_repeat, int(np.ceil(longest / len(slices))))).tolist())
    return out


def make_train_dataset(
    cases: list[CachedCase],
    context: int,
    patch_size,
    batch_size: int,
    positive_fraction: float = 0.5,
    augment: RandomAugment2D | None = None,
    shuffle_buffer: int = 256,
    seed: int = 0,
) -> tf.data.Dataset:
    """Infinite dataset of `(image, mask)` batches: `(B, h, w, K)` float32 HU and `(B, h, w, 1)`."""
    sampler = SliceSampler(cases, context, patch_size)
    parts, weights = [], []
    for rows, flag, weight in (
        (sampler.positive, True, positive_fraction),
        (sampler.negative, False, 1.0 - positive_fraction),
    ):
        if len(rows) and weight > 0:
            ds = tf.data.Dataset.from_tensor_slices((rows[:, 0], rows[:, 1]))
            ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True).repeat()
            parts.append(ds.map(lambda c, z, f=flag: (c, z, tf.constant(f))))
            weights.append(weight)
    if not parts:
        raise DataError("The training split has no slices to sample. Received: 0 slices")
    ds = tf.data.Dataset.sample_from_datasets(parts, weights=weights, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    ph, pw = sampler.patch

    def load(element, seed_pair):
        case_index, slice_index, positive = element
        image, mask = tf.numpy_function(
            sampler.crop, [case_index, slice_index, positive, seed_pair], [tf.float32, tf.float32]
        )
        image.set_shape((ph, pw, sampler.context))
        mask.set_shape((ph, pw, 1))
        if augment is not None:
            image, mask = augment(image, mask, seed_pair)
        return image, mask

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.shuffle(shuffle_buffer, seed=seed)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def select_val_slices(
    cases: list[CachedCase], context: int, max_slices: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole validation slices: every positive slice (evenly thinned) plus as many negatives."""
    pos, neg = [], []
    for case in cases:
        has_fg = np.asarray(case.mask).reshape(case.mask.shape[0], -1).any(axis=1)
        for z, flag in enumerate(has_fg):
            (pos if flag else neg).append((case, z))
    half = max(1, max_slices // 2)

    def thin(items, n):
        if len(items) <= n:
            return items
        return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]

    chosen = thin(pos, half) + thin(neg, max_slices - min(len(pos), half))
    if not chosen:
        raise DataError("The validation split has no slices. Received: 0 slices")
    images = np.concatenate([slice_stack(c.image, [z], context) for c, z in chosen]).astype(np.float32)
    masks = np.stack([np.asarray(c.mask[z], np.float32) for c, z in chosen])[..., None]
    return images, masks


def make_val_dataset(
    cases: list[CachedCase], context: int, batch_size: int, max_slices: int = 64
) -> tf.data.Dataset:
    """Finite dataset of whole validation slices `(B, H, W, K)`, in a fixed order."""
    images, masks = select_val_slices(cases, context, max_slices)
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
