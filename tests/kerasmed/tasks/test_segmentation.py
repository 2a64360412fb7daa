"""The segmentation task's training stream."""

from pathlib import Path

import numpy as np

from kerasmed.config import load_config
from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.cache import CachedCase
from kerasmed.data.pipeline import make_train_dataset
from kerasmed.tasks import training_task

FLAGSHIP = Path(__file__).resolve().parents[3] / "configs" / "lung_nodule_seg_2d.yaml"


def _cases(n=2, z=8, size=72):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        image = rng.uniform(-1000, 400, (z, size, size)).astype(np.float32)
        mask = np.zeros((z, size, size), np.uint8)
        mask[3:5, 30:40, 20:30] = 1
        cases.append(CachedCase(f"c{i}", "train", image, mask))
    return cases


def test_the_flagship_stream_is_bit_identical_to_its_absolute_20_hu_augmentation():
    """`augmentation.intensity_shift` (20/1400 of the window) replaced the absolute +-20 HU:
    the flagship's training batches are the same, bit for bit."""
    config = load_config(FLAGSHIP)
    s = config.sampling
    cases = _cases()
    new = training_task("segmentation").train_dataset(config, cases, None, batch_size=4)
    before = make_train_dataset(
        cases, config.model.context_slices, s.patch_size, 4, s.positive_fraction,
        RandomAugment2D(True, True, 20.0, 0.05), s.shuffle_buffer, config.seed,
    )
    for (image, mask), (image_before, mask_before) in zip(new.take(3), before.take(3)):
        np.testing.assert_array_equal(image.numpy(), image_before.numpy())
        np.testing.assert_array_equal(mask.numpy(), mask_before.numpy())
