import numpy as np
import pytest
from scipy import ndimage

from kerasmed.data.synthetic_ct import make_case
from serving.errors import ConfigError

SEEDS = range(6)


@pytest.fixture(scope="module")
def cases():
    # The full default size: the vessel/nodule statistics below are claims about that size.
    return [make_case(seed) for seed in SEEDS]


def _body(ct: np.ndarray) -> np.ndarray:
    """Everything inside the skin: non-air, with holes (lungs, trachea) filled slice by slice."""
    return np.stack([ndimage.binary_fill_holes(s > -500) for s in ct])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)


def test_same_seed_same_case_and_other_seed_differs():
    a, b, c = (make_case(s, shape=(16, 96, 96)) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.ct.array, b.ct.array)
    np.testing.assert_array_equal(a.nodule_mask.array, b.nodule_mask.array)
    np.testing.assert_array_equal(a.lung_mask.array, b.lung_mask.array)
    assert a.nodules == b.nodules and a.ct.spacing == b.ct.spacing
    assert not np.array_equal(a.ct.array, c.ct.array)
    assert a.nodules != c.nodules


def test_types_shapes_and_geometry(cases):
    for case in cases:
        assert case.ct.array.dtype == np.float32 and case.ct.shape == (48, 256, 256)
        assert case.nodule_mask.array.dtype == np.uint8 and case.lung_mask.array.dtype == np.uint8
        assert set(np.unique(case.nodule_mask.array)) <= {0, 1}
        assert case.ct.modality == "CT"
        assert case.ct.same_geometry(case.nodule_mask) and case.ct.same_geometry(case.lung_mask)
        sz, sy, sx = case.ct.spacing
        assert sz == 2.5 and sy == sx and 1.25 <= sx <= 1.45
    assert len({case.ct.spacing for case in cases}) > 1  # drawn per case


def test_explicit_spacing_and_bad_arguments():
    case = make_case(1, shape=(12, 64, 80), spacing=(3.0, 1.0, 1.1))
    assert case.ct.shape == (12, 64, 80) and case.ct.spacing == (3.0, 1.0, 1.1)
    with pytest.raises(ConfigError, match=r"Received: shape=\(4, 64, 64\)"):
        make_case(0, shape=(4, 64, 64))
    with pytest.raises(ConfigError, match="spacing"):
        make_case(0, shape=(16, 64, 64), spacing=(2.5, 0.0, 1.0))


def test_hounsfield_ranges(cases):
    for case in cases:
        ct, lung = case.ct.array, case.lung_mask.array > 0
        body = _body(ct)
        parenchyma = lung & (case.nodule_mask.array == 0)
        assert -900 <= np.median(ct[parenchyma]) <= -800
        assert np.median(ct[~body]) < -950 and np.mean(ct[~body]) < -900
        # Outside the lungs the body is mostly soft tissue (~40 HU, the histogram's peak) with a
        # subcutaneous fat layer (~-100 HU).
        counts, edges = np.histogram(ct[body & ~lung], bins=np.arange(-300, 301, 10))
        assert 20 <= edges[np.argmax(counts)] + 5 <= 60
        fat = (edges[:-1] >= -150) & (edges[:-1] < -50)
        assert counts[fat].sum() >= 0.05 * counts.sum()
        assert np.percentile(ct[body & ~lung], 99.9) > 300  # ribs and spine are there


@pytest.fixture(scope="module")
def small_cases():
    return [make_case(seed, shape=(16, 96, 96)) for seed in range(12)]


def test_nodules(cases):
    for case in cases:
        assert 1 <= len(case.nodules) <= 3
        assert 8.0 <= case.nodules[0]["diameter_mm"] <= 30.0
        mask = case.nodule_mask.array > 0
        for nodule in case.nodules:
            assert 3.0 <= nodule["diameter_mm"] <= 30.0
            centre = (nodule["center_x_mm"], nodule["center_y_mm"], nodule["center_z_mm"])
            k, j, i = np.round(case.ct.physical_to_index(centre)).astype(int)
            assert mask[k, j, i]
        # Mask volume matches the listed diameters (lobulation changes it by a few percent; a
        # pleural nodule loses up to 30% of its ball where it presses flat against the wall).
        volume = mask.sum() * np.prod(case.ct.spacing)
        expected = sum(
            np.pi / 6 * n["diameter_mm"] ** 3 * (0.7 if n["attachment"] == "pleural" else 1.0)
            for n in case.nodules
        )
        assert 0.75 * expected <= volume <= 1.3 * expected / 0.7


def test_nodule_kinds_and_attachments(small_cases):
    nodules = [n for case in small_cases for n in case.nodules]
    assert all(1 <= len(case.nodules) <= 3 for case in small_cases)
    assert all(3.0 <= n["diameter_mm"] <= 30.0 for n in nodules)
    assert {n["kind"] for n in nodules} == {"solid", "ground_glass"}
    assert {n["attachment"] for n in nodules} == {"none", "pleural", "vascular"}
    assert 0.45 <= np.mean([n["kind"] == "solid" for n in nodules]) <= 0.95


def test_nodule_intensities(small_cases):
    solid, ground_glass = [], []
    for case in small_cases:
        for nodule in case.nodules:
            centre = (nodule["center_x_mm"], nodule["center_y_mm"], nodule["center_z_mm"])
            k, j, i = np.round(case.ct.physical_to_index(centre)).astype(int)
            core = case.ct.array[k, j - 1 : j + 2, i - 1 : i + 2]
            (solid if nodule["kind"] == "solid" else ground_glass).append(np.median(core))
    assert -60 <= np.median(solid) <= 120
    assert -650 <= np.median(ground_glass) <= -200


def test_nodules_are_in_body_and_mostly_in_lung(cases):
    shares = []
    for case in cases:
        mask = case.nodule_mask.array > 0
        assert not np.any(mask & ~_body(case.ct.array))
        shares.append(np.mean(case.lung_mask.array[mask] > 0))
    assert min(shares) >= 0.6 and np.mean(shares) >= 0.85


def test_pleural_nodules_press_flat_against_the_pleura(cases):
    touching = []
    for case in cases:
        labels, _ = ndimage.label(case.nodule_mask.array)
        lung = case.lung_mask.array > 0
        for nodule in case.nodules:
            if nodule["attachment"] != "pleural":
                continue
            centre = (nodule["center_x_mm"], nodule["center_y_mm"], nodule["center_z_mm"])
            k, j, i = np.round(case.ct.physical_to_index(centre)).astype(int)
            own = labels == labels[k, j, i]
            # A lung lesion: none of it in the chest wall, but its surface reaches the wall.
            assert np.all(lung[own])
            rim = ndimage.binary_dilation(own, iterations=2) & ~own
            touching.append(np.mean(~lung[rim]))
    assert touching and all(share > 0.05 for share in touching)


def test_vessels_fill_the_lungs(cases):
    for case in cases:
        ct, lung = case.ct.array, case.lung_mask.array > 0
        vessel = (ct > -500) & lung & (case.nodule_mask.array == 0)
        assert 0.025 <= vessel.sum() / lung.sum() <= 0.15
        # Many separate blobs per axial slice, not one tree trunk.
        mid = ct.shape[0] // 2
        _, blobs = ndimage.label(vessel[mid])
        assert blobs >= 15


def test_threshold_baseline_is_poor(cases):
    """A 'HU > -500 inside the lung' rule must not solve the task: vessels look like nodules."""
    dice = [
        _dice((c.ct.array > -500) & (c.lung_mask.array > 0), c.nodule_mask.array > 0) for c in cases
    ]
    assert np.mean(dice) <= 0.5
