import os
import sys
import threading

import numpy as np
import pytest

from kerasmed.data import pipeline
from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.cache import CachedCase
from kerasmed.data.pipeline import make_train_dataset, make_val_dataset
from serving.errors import ConfigError


def _cases(n=3, z=10, size=48):
    rng = np.random.default_rng(1)
    cases = []
    for i in range(n):
        image = rng.uniform(-1000, -700, (z, size, size)).astype(np.float32)
        mask = np.zeros((z, size, size), np.uint8)
        mask[2:4, 30:36, 10:16] = 1  # 2 positive slices of 10
        image[mask > 0] = 40.0
        cases.append(CachedCase(f"c{i}", "train", image, mask))
    return cases


def test_positive_fraction_is_respected_and_patches_align():
    ds = make_train_dataset(_cases(), 1, (16, 16), batch_size=32, positive_fraction=0.5, seed=0)
    images, masks = next(iter(ds.take(1)))
    images, masks = images.numpy(), masks.numpy()
    assert images.shape == (32, 16, 16, 1) and masks.shape == (32, 16, 16, 1)
    frac = np.mean([m.any() for m in masks])
    # Positive slices are 20% of slices; balancing lifts patches with foreground to ~50%.
    assert 0.3 <= frac <= 0.75
    # Without augmentation the nodule HU sits exactly under the mask.
    np.testing.assert_array_equal(images[masks > 0], 40.0)


def test_augmented_pairs_stay_aligned_and_seed_reproduces():
    aug = RandomAugment2D(intensity_offset=0.0, intensity_scale=0.0)
    a = make_train_dataset(_cases(), 3, (16, 16), 16, 1.0, aug, seed=5)
    b = make_train_dataset(_cases(), 3, (16, 16), 16, 1.0, aug, seed=5)
    (ia, ma), (ib, _) = next(iter(a)), next(iter(b))
    np.testing.assert_array_equal(ia.numpy(), ib.numpy())
    assert ia.shape[-1] == 3
    # The centre channel is the labelled slice: nodule HU exactly under the (augmented) mask.
    np.testing.assert_array_equal(ia.numpy()[..., 1][ma.numpy()[..., 0] > 0], 40.0)
    assert all(m.any() for m in ma.numpy())  # positive_fraction=1 -> every patch has foreground


def test_patch_larger_than_slice_names_the_key():
    with pytest.raises(ConfigError, match="patch_size"):
        make_train_dataset(_cases(size=16), 1, (32, 32), 4)


def test_val_dataset_whole_slices_with_positives():
    ds = make_val_dataset(_cases(), 1, batch_size=4, max_slices=8)
    images, masks = zip(*[(i.numpy(), m.numpy()) for i, m in ds])
    masks = np.concatenate(masks)
    assert masks.shape[1:] == (48, 48, 1) and len(masks) == 8
    assert sum(m.any() for m in masks) == 4


def test_lesion_balanced_sampling_gives_small_lesions_an_equal_share():
    from kerasmed.data.pipeline import _lesion_balanced_slices

    mask = np.zeros((20, 16, 16), np.uint8)
    mask[0:12, 2:6, 2:6] = 1  # a big lesion over 12 slices
    mask[15:17, 10:12, 10:12] = 1  # a small one over 2 slices
    slices = np.array(_lesion_balanced_slices(mask))
    big, small = np.sum(slices < 12), np.sum(slices >= 15)
    assert big == 12 and small == 12
    assert _lesion_balanced_slices(np.zeros((3, 4, 4), np.uint8)) == []


def _batches(ds, n):
    return [(i.numpy(), m.numpy()) for i, m in ds.take(n)]


def test_stream_is_the_same_for_every_iterator():
    # Keras and tf.distribute create extra iterators (symbolic build, one per fit); the stream
    # must not depend on how many came before, or resuming and sharding would drift.
    ds = make_train_dataset(_cases(), 3, (16, 16), 8, 0.5, RandomAugment2D(), seed=2)
    first, second = _batches(ds, 4), _batches(ds, 4)
    for (a, ma), (b, mb) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)


def test_skip_resumes_the_stream_exactly():
    full = _batches(make_train_dataset(_cases(), 1, (16, 16), 4, 0.5, RandomAugment2D(), seed=3), 5)
    resumed = _batches(make_train_dataset(_cases(), 1, (16, 16), 4, 0.5, RandomAugment2D(), seed=3,
                                          skip=2 * 4), 3)
    for (a, _), (b, _) in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_union_of_worker_shards_is_the_global_batch():
    global_batch, workers = 6, 3
    whole = _batches(make_train_dataset(_cases(), 1, (16, 16), global_batch, 0.5, RandomAugment2D(),
                                        seed=4), 4)
    shards = [_batches(make_train_dataset(_cases(), 1, (16, 16), global_batch // workers, 0.5,
                                          RandomAugment2D(), seed=4, num_shards=workers,
                                          shard_index=w), 4) for w in range(workers)]
    for b, (images, _) in enumerate(whole):
        # Worker w takes examples w, w+W, w+2W, ...: example i of its batch is global b*B + i*W + w.
        union = np.stack([shards[w][b][0][i] for i in range(global_batch // workers)
                          for w in range(workers)])
        np.testing.assert_array_equal(union, images)


def test_bad_shard_arguments_name_them():
    with pytest.raises(ConfigError, match="shard_index.*Received.*shard_index=2"):
        make_train_dataset(_cases(), 1, (16, 16), 4, num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="skip=-1"):
        make_train_dataset(_cases(), 1, (16, 16), 4, skip=-1)


def test_map_is_order_deterministic_under_parallel_calls():
    # The crop runs in tf.numpy_function from several threads; its result depends only on its
    # inputs (explicit seed), and the map keeps input order, so the batches are reproducible.
    aug = RandomAugment2D()
    a = _batches(make_train_dataset(_cases(), 3, (16, 16), 16, 0.5, aug, seed=9), 3)
    b = _batches(make_train_dataset(_cases(), 3, (16, 16), 16, 0.5, aug, seed=9), 3)
    for (x, mx), (y, my) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(mx, my)


def test_windowed_crop_equals_cropping_whole_slice_stacks():
    """Reading only the patch window gives exactly the stack `slice_stack` builds at prediction."""
    from kerasmed.data.pipeline import SliceSampler
    from serving.inference import slice_stack

    cases = _cases(n=2, z=6, size=40)
    for case in cases:
        case.image[:] = np.random.default_rng(3).uniform(-1000, 400, case.image.shape)
    sampler = SliceSampler(cases, 5, (16, 16))
    for ci, z, positive, seed in [(0, 0, False, (1, 2)), (1, 5, False, (3, 4)), (0, 2, True, (5, 6)),
                                  (1, 3, True, (7, 8))]:
        image, mask = sampler.crop(ci, z, positive, np.array(seed))
        full = slice_stack(cases[ci].image, [z], 5)[0]
        hits = [(y, x) for y in range(25) for x in range(25)
                if np.array_equal(full[y:y + 16, x:x + 16], image)]
        assert len(hits) == 1, (ci, z)
        y, x = hits[0]
        np.testing.assert_array_equal(mask[..., 0], cases[ci].mask[z, y:y + 16, x:x + 16])
        assert image.dtype == np.float32 and image.flags.c_contiguous
        if positive:
            assert mask.any()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads are reniced on Linux only")
def test_crop_runs_on_a_lower_priority_thread_and_the_main_thread_is_left_alone(monkeypatch):
    seen = []
    crop = pipeline.SliceSampler.crop_batch

    def recording(self, *args):
        out = crop(self, *args)
        tid = threading.get_native_id()
        seen.append((tid, os.getpriority(os.PRIO_PROCESS, tid)))
        return out

    monkeypatch.setattr(pipeline.SliceSampler, "crop_batch", recording)
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _batches(make_train_dataset(_cases(), 1, (16, 16), 4, 0.5, seed=0), 3)
    assert seen and all(tid != threading.get_native_id() for tid, _ in seen)
    assert {nice for _, nice in seen} == {min(19, main + pipeline.PIPELINE_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main
