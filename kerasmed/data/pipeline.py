"""tf.data pipelines over the preprocessed cache: balanced 2D patch sampling and validation slices.

Training: pick positive (contains foreground) and negative slices with a fixed mix and shuffle
these cheap indices, batch them, then crop and augment a whole batch in one numpy call (a patch
centred near a random foreground pixel for positives, anywhere for negatives; image and mask with
one random draw), and prefetch. The stream is a
deterministic function of the seed, so an interrupted run can skip what it already consumed and
workers can shard it element by element. Validation: whole slices, fixed order.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import tensorflow as tf
from scipy import ndimage

from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.cache import CachedCase
from serving.errors import ConfigError, DataError
from serving.inference import slice_stack

# How much lower than the training threads the thread cropping patches runs (Linux nice levels).
# On 2 cores the crop shares the CPU with the two oneDNN training threads, and preempting one of
# them stalls the other at the next barrier; at a lower priority the crop runs in their gaps
# instead. Bit-identical patches; `make bench` (5 back-to-back runs, 2-core Zen 5): tf.data vs its
# in-memory ceiling 0.873 -> 0.903 on average.
PIPELINE_NICE = 10
_niced = threading.local()


def _yield_to_training() -> None:
    """Lower the calling thread's priority by `PIPELINE_NICE`, once per thread: a tf.data thread,
    never the main one (Linux only: elsewhere a thread cannot be reniced on its own; a failure
    changes nothing)."""
    if (getattr(_niced, "done", False) or not sys.platform.startswith("linux")
            or threading.current_thread() is threading.main_thread()):
        return
    _niced.done = True
    try:
        # Absolute, from the main thread's level: a thread started by an already lowered one
        # inherits its level and must not be lowered twice.
        base = os.getpriority(os.PRIO_PROCESS, threading.main_thread().native_id)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + PIPELINE_NICE))
    except OSError:
        pass


class SliceSampler:
    """Crops 2D patches from memory-mapped cached volumes (numpy, called through tf.numpy_function).

    Args:
        cases: cached cases of one split.
        context: odd number of neighbouring slices per example (channels), as the model takes.
        patch_size: `(h, w)` patch size; must fit inside the cached slices.
        augment: applied to every patch with the patch's own generator, or None.
    """

    def __init__(self, cases: list[CachedCase], context: int, patch_size,
                 augment: RandomAugment2D | None = None):
        if not cases:
            raise DataError("No cached cases to sample from. Received: 0 cases")
        self.cases = cases
        self.context = int(context)
        self.patch = tuple(int(p) for p in patch_size)
        self.augment = augment
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
        self._fg_cache: dict[tuple[int, int], np.ndarray] = {}

    def crop(self, case_index, slice_index, positive, seed):
        """One patch: `(ph, pw, context)` float32 HU and its `(ph, pw, 1)` float32 mask."""
        image, mask = self.crop_batch([case_index], [slice_index], [positive], [seed])
        return image[0], mask[0]

    def crop_batch(self, case_index, slice_index, positive, seeds):
        """Patches for `(B,)` indices and `(B, 2)` seeds: `(B, ph, pw, context)` float32 HU and
        `(B, ph, pw, 1)` float32 masks. Each patch depends only on its own inputs.

        Per patch, the window is chosen first, then only that window of the `context` slices is
        read from the memory-mapped cache (not whole slices), flipped and rotated as views, and
        copied once, channels-last, into the batch; the intensity jitter is applied to the whole
        batch at the end. The pipeline shares the CPU with training, so every copy counts.
        """
        _yield_to_training()  # runs on a tf.data thread, beside the training threads
        n, (ph, pw) = len(case_index), self.patch
        images = np.empty((n, ph, pw, self.context), np.float32)
        masks = np.empty((n, ph, pw, 1), np.float32)
        gains, offsets = np.ones(n, np.float32), np.zeros(n, np.float32)
        for i, (ci, z, pos, seed) in enumerate(zip(case_index, slice_index, positive, seeds)):
            rng = np.random.default_rng(np.asarray(seed, dtype=np.uint64))
            image, mask = self._window(int(ci), int(z), bool(pos), rng)
            if self.augment is not None:
                draw = self.augment.draw(rng)
                image = self.augment.geometry(image, draw, axes=(1, 2))
                mask = self.augment.geometry(mask, draw, axes=(0, 1))
                gains[i], offsets[i] = draw.gain, draw.offset
            images[i] = np.moveaxis(image, 0, -1)
            masks[i, ..., 0] = mask
        if self.augment is not None:
            images *= gains[:, None, None, None]
            images += offsets[:, None, None, None]
        return images, masks

    def _window(self, ci: int, z: int, positive: bool, rng: np.random.Generator):
        """The `(context, ph, pw)` image and `(ph, pw)` mask window (views where possible)."""
        case = self.cases[ci]
        (ph, pw), (depth, h, w) = self.patch, case.image.shape
        if positive:
            fg = self._foreground(ci, z)
            cy, cx = fg[rng.integers(len(fg))]
            # Jitter so the lesion is not always at the patch centre.
            cy += rng.integers(-ph // 4, ph // 4 + 1)
            cx += rng.integers(-pw // 4, pw // 4 + 1)
            y0, x0 = min(max(int(cy) - ph // 2, 0), h - ph), min(max(int(cx) - pw // 2, 0), w - pw)
        else:
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        half = self.context // 2
        if half <= z < depth - half:
            zs = slice(z - half, z + half + 1)
        else:  # edge slices repeated, as `serving.inference.slice_stack` does at prediction time
            zs = np.clip(np.arange(self.context) - half + z, 0, depth - 1)
        return case.image[zs, y0 : y0 + ph, x0 : x0 + pw], case.mask[z, y0 : y0 + ph, x0 : x0 + pw]

    def _foreground(self, case_index: int, slice_index: int) -> np.ndarray:
        """`(n, 2)` foreground pixel coordinates of one slice, computed once per slice."""
        key = (case_index, slice_index)
        fg = self._fg_cache.get(key)
        if fg is None:
            fg = np.argwhere(np.asarray(self.cases[case_index].mask[slice_index]) > 0)
            self._fg_cache[key] = fg
        return fg


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


def _endless_passes(rows: np.ndarray, seed: int, stream: int) -> tf.data.Dataset:
    """`rows` in a fresh random order on every pass, forever: `(case, slice)` int64 pairs.

    Each pass's order is a stateless function of `(seed, stream, pass)`, so the stream is the same
    however many iterators have been made from the dataset before (Keras and tf.distribute make
    extra ones), unlike `shuffle(reshuffle_each_iteration=True).repeat()`.
    """
    table = tf.constant(rows, tf.int64)
    key = tf.constant([seed, stream], tf.int64)

    def one_pass(index):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(rows), dtype=tf.int64),
            seed=tf.random.experimental.stateless_fold_in(key, index),
        )
        return tf.gather(table, order)

    return tf.data.Dataset.counter().map(one_pass).unbatch()


def sample_index_stream(
    sampler: SliceSampler, positive_fraction: float = 0.5, shuffle_buffer: int = 256, seed: int = 0
) -> tf.data.Dataset:
    """Infinite, reproducible stream of what to crop: `((case, slice, positive), seed_pair)`.

    Cheap index-level elements; the expensive crop and augmentation come later. Positive and
    negative slices are drawn from separately shuffled passes, mixed by `sample_from_datasets` at
    `positive_fraction`, paired with a per-example `(2,)` augmentation seed, then shuffled in a
    `shuffle_buffer` window. Every step is deterministic for a given `seed`, so element `n` is the
    same in every run: resuming can skip elements and workers can shard them.
    """
    parts, weights = [], []
    for stream, (rows, flag, weight) in enumerate((
        (sampler.positive, True, positive_fraction),
        (sampler.negative, False, 1.0 - positive_fraction),
    )):
        if len(rows) and weight > 0:
            ds = _endless_passes(rows, seed, stream)
            parts.append(ds.map(lambda row, f=flag: (row[0], row[1], tf.constant(f))))
            weights.append(weight)
    if not parts:
        raise DataError("The training split has no slices to sample. Received: 0 slices")
    ds = tf.data.Dataset.sample_from_datasets(parts, weights=weights, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    # Same order for every iterator: no reshuffle (the stream never restarts anyway).
    return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)


def make_train_dataset(
    cases: list[CachedCase],
    context: int,
    patch_size,
    batch_size: int,
    positive_fraction: float = 0.5,
    augment: RandomAugment2D | None = None,
    shuffle_buffer: int = 256,
    seed: int = 0,
    skip: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """Infinite dataset of `(image, mask)` batches: `(B, h, w, K)` float32 HU and `(B, h, w, 1)`.

    The pipeline is `sample_index_stream -> skip -> shard -> crop+augment -> batch -> prefetch`.
    Skipping and sharding act on the cheap index stream, before the expensive map, so:
    - `skip=n` continues a run that consumed `n` examples exactly where it stopped;
    - `num_shards=W, shard_index=w` gives worker `w` every W-th example; with `batch_size` the
      per-replica batch `B/W`, the union of the W workers' batch `b` is exactly batch `b` of the
      unsharded pipeline with batch `B`.

    Args:
        cases: cached cases of the training split.
        context: odd number of neighbouring slices per example (channels).
        patch_size: `(h, w)` patch size.
        batch_size: examples per batch (per replica under a distribution strategy).
        positive_fraction: share of patches drawn around foreground.
        augment: random augmentation applied with each example's seed, or None.
        shuffle_buffer: window of the index-level shuffle.
        seed: seed of every random draw in the pipeline.
        skip: examples of the global stream to skip (already consumed by an interrupted run).
        num_shards: number of input pipelines sharing the stream (workers).
        shard_index: this pipeline's index in `[0, num_shards)`.

    Raises:
        ConfigError: if the patch does not fit, or skip/shard arguments are out of range.
        DataError: if there is nothing to sample.
    """
    if skip < 0 or num_shards < 1 or not 0 <= shard_index < num_shards or batch_size < 1:
        raise ConfigError(
            "`skip` must be >= 0, `batch_size` and `num_shards` >= 1, and `shard_index` in "
            f"[0, num_shards). Received: skip={skip}, batch_size={batch_size}, "
            f"num_shards={num_shards}, shard_index={shard_index}"
        )
    sampler = SliceSampler(cases, context, patch_size, augment)
    ds = sample_index_stream(sampler, positive_fraction, shuffle_buffer, seed)
    if skip:
        ds = ds.skip(skip)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ph, pw = sampler.patch

    def load(elements, seed_pairs):
        case_index, slice_index, positive = elements
        # One numpy call per batch: per-patch TF ops cost more CPU than the crop itself on a
        # 2-core machine where the pipeline shares the cores with training. A pure function of its
        # inputs (explicit seeds), so declared stateless: under op determinism tf.data may still
        # run it in parallel, and order is kept by `deterministic=True`.
        image, mask = tf.numpy_function(
            sampler.crop_batch, [case_index, slice_index, positive, seed_pairs],
            [tf.float32, tf.float32], stateful=False,
        )
        image.set_shape((batch_size, ph, pw, sampler.context))
        mask.set_shape((batch_size, ph, pw, 1))
        return image, mask

    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(load, num_parallel_calls=1, deterministic=True).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    # Sharding is done above, element by element; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


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
