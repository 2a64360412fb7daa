import numpy as np
import pytest

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
    aug = RandomAugment2D(intensity_shift_hu=0.0, intensity_scale=0.0)
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
