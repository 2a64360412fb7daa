from pathlib import Path

import numpy as np

from kerasmed.config import load_config
from kerasmed.data.augment import RandomAugment2D
from kerasmed.data.intensity import input_shift

FLAGSHIP = Path(__file__).resolve().parents[3] / "configs" / "lung_nodule_seg_2d.yaml"


def _pair():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1000, 400, (16, 16, 1)).astype(np.float32)
    mask = (rng.random((16, 16, 1)) > 0.7).astype(np.float32)
    return image, mask


def test_same_geometric_draw_on_image_and_mask():
    image, _ = _pair()
    # Identical inputs as image and mask: the same draw keeps them identical.
    aug = RandomAugment2D(flip=True, rot90=True, intensity_offset=0.0, intensity_scale=0.0)
    transforms = set()
    for s in range(32):
        a, b = aug(image, image.copy(), np.random.default_rng([3, s]))
        np.testing.assert_array_equal(a, b)
        assert a.flags.c_contiguous and b.flags.c_contiguous and a.dtype == np.float32
        transforms.add(a.tobytes())
    assert len(transforms) >= 6  # flips x rot90 give 8 distinct results; 32 draws hit most


def test_seeded_and_reproducible():
    image, mask = _pair()
    aug = RandomAugment2D()
    a1, m1 = aug(image, mask, np.random.default_rng([7, 11]))
    a2, m2 = aug(image, mask, np.random.default_rng([7, 11]))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(m1, m2)
    assert m1.sum() == mask.sum()  # geometry only moves foreground, never creates it
    assert np.isin(a1, image * np.float32(a1.flat[0] / image.flat[0])).mean() < 1.0  # jittered


def test_intensity_jitter_stays_within_bounds_and_leaves_mask():
    image = np.full((8, 8, 1), 100.0, np.float32)
    mask = np.ones((8, 8, 1), np.float32)
    aug = RandomAugment2D(flip=False, rot90=False, intensity_offset=20.0, intensity_scale=0.05)
    values = []
    for s in range(20):
        out, m = aug(image, mask, np.random.default_rng(s))
        assert np.ptp(out) == 0.0  # one draw per patch
        values.append(out[0, 0, 0])
        np.testing.assert_array_equal(m, mask)
    assert 100 * 0.95 - 20 - 1e-3 <= min(values) and max(values) <= 100 * 1.05 + 20 + 1e-3
    assert np.ptp(values) > 10.0  # the draws do vary


def test_geometry_only_is_a_pure_permutation_of_pixels():
    image, mask = _pair()
    aug = RandomAugment2D(intensity_offset=0.0, intensity_scale=0.0)
    for s in range(8):
        a, m = aug(image, mask, np.random.default_rng(s))
        np.testing.assert_array_equal(np.sort(a, axis=None), np.sort(image, axis=None))
        np.testing.assert_array_equal(np.sort(m, axis=None), np.sort(mask, axis=None))


def test_the_flagship_config_still_shifts_by_u_minus_20_to_20_hu():
    """The relative shift (20/1400 of the window) gives the flagship the very draws of the
    absolute +-20 HU it had before: same offsets, bit for bit."""
    config = load_config(FLAGSHIP)
    a = config.augmentation
    aug = RandomAugment2D(a.flip, a.rot90, input_shift(config), a.intensity_scale)
    before = RandomAugment2D(True, True, 20.0, 0.05)  # the flagship's arguments until now
    offsets = []
    for s in range(200):
        draw = aug.draw(np.random.default_rng(s))
        assert draw == before.draw(np.random.default_rng(s))
        rng = np.random.default_rng(s)
        rng.random(2), rng.integers(4)
        u = rng.uniform(-1.0, 1.0, 2)[1]
        assert draw.offset == np.float32(20.0 * u)  # U(-20, 20) HU
        offsets.append(float(draw.offset))
    assert -20.0 <= min(offsets) < -19.0 and 19.0 < max(offsets) <= 20.0
