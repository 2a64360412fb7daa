"""Round trips of the whole preprocessing on anisotropic volumes: label maps come back exactly,
and every voxel of the preprocessed grid keeps its physical (LPS) position (issue 7)."""

import numpy as np
import pytest

from serving.image import Image
from serving.preprocessing import PreprocessSpec, invert, preprocess, preprocessed_image

SPACING = (3.0, 0.7, 0.9)
SHAPE = (20, 57, 61)


def _phantom():
    """-1000 HU air, an elliptic body (40 HU) in slices 3..16, and labels 1 and 2 inside it."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    body = (((y - 30) / 17.0) ** 2 + ((x - 27) / 21.0) ** 2 <= 1) & (z >= 3) & (z <= 16)
    vol = np.where(body, 40.0, -1000.0).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[body & (((y - 26) / 6.0) ** 2 + ((x - 20) / 5.0) ** 2 <= 1)] = 1
    labels[5:9, 33:36, 30:32] = 2  # a lesion of 3 x 2 voxels in-plane
    return vol, labels, body


def test_labels_round_trip_exactly_through_crop_resampling_and_multiple_padding():
    vol, labels, body = _phantom()
    image = Image(vol, SPACING, origin=(-12.5, 30.25, -80.0))
    spec = PreprocessSpec((None, 0.5, 0.5), (None, None, None), crop_foreground=-500,
                          foreground_margin=(1, 3, 3), multiple_of=(None, 16, 16))
    x, record = preprocess(image, spec)
    # The box, from the body's extent: slices 3..16, rows 13..47, columns 6..48, plus margins.
    assert record.box_start == (2, 10, 3) and record.box_shape == (16, 41, 49)
    # 41 rows x 0.7 mm -> 57 at ~0.5 mm, padded to 64; 49 x 0.9 -> 88, padded to 96.
    assert record.resampled_shape == (16, 57, 88) and x.shape == (16, 64, 96)
    assert record.output_spacing == pytest.approx((3.0, 41 * 0.7 / 57, 49 * 0.9 / 88))
    y, _ = preprocess(Image(labels, SPACING), spec, order="nearest", record=record)
    # The lesion is upsampled, not lost: 4 slices x ~(2.1 / 0.5036) rows x (1.8 / 0.5011) cols.
    assert 4 * 4 * 3 <= np.count_nonzero(y == 2) <= 4 * 5 * 4
    np.testing.assert_array_equal(invert(y, record, order="nearest"), labels)
    # Probabilities go back with `fill` outside the box.
    probs = invert(np.ones(x.shape + (1,), np.float32), record, fill=0.0)[..., 0]
    np.testing.assert_array_equal(probs[2:18, 10:51, 3:52], 1.0)
    assert probs.sum() == 16 * 41 * 49


def test_preprocessed_grid_origin_and_spacing_worked_by_hand():
    vol = np.full((2, 10, 12), -1000.0, np.float32)
    vol[:, 2:8, 3:9] = 0.0
    image = Image(vol, (3.0, 1.0, 0.8), origin=(5.0, -7.0, 11.0))  # axial: x->L, y->P, z->S
    spec = PreprocessSpec((None, 0.5, None), (None, None, None), crop_foreground=-500,
                          multiple_of=(None, 16, 8))
    x, record = preprocess(image, spec)
    # Box rows [2, 8), columns [3, 9); rows 6 -> 12 at 0.5 mm padded to 16 (start -2); columns
    # 6 padded to 8 (start -1). Output (0, 0, 0) is source index
    # (0, 2 + (-2 + 0.5) * 6 / 12 - 0.5, 3 + (-1 + 0.5) - 0.5) = (0, 0.75, 2.0),
    # at L = 5 + 2.0 * 0.8, P = -7 + 0.75 * 1.0, S = 11 + 0 * 3.
    assert record.crop_start == (0, -2, -1) and x.shape == (2, 16, 8)
    grid = preprocessed_image(x, image, record)
    np.testing.assert_allclose(grid.spacing, (3.0, 0.5, 0.8), atol=1e-12)
    np.testing.assert_allclose(grid.origin, (6.6, -6.25, 11.0), atol=1e-12)
    np.testing.assert_array_equal(grid.direction, image.direction)


def _oblique_direction():
    """Direction cosines of a tilted acquisition: rotations of 20 deg and 35 deg."""
    a, b = np.deg2rad(20.0), np.deg2rad(35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx @ np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("order", ["linear", "cubic"])
@pytest.mark.parametrize("component", [0, 1, 2])
def test_every_voxel_keeps_its_physical_position_within_1e_4_mm(order, component):
    # The image's value at each voxel is one LPS coordinate (mm) of that voxel. Linear and
    # cubic interpolation reproduce a linear function exactly, so after preprocessing every
    # voxel away from the box edges must hold the coordinate of its position on the new grid.
    source = Image(np.zeros(SHAPE, np.float32), SPACING, origin=(-12.5, 30.25, -8.0),
                   direction=_oblique_direction())
    index = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1)
    mm = source.index_to_physical(index.reshape(-1, 3)).reshape(SHAPE + (3,))[..., component]
    image = source.with_array(mm.astype(np.float32))
    spec = PreprocessSpec((None, 0.5, 0.6), (None, None, None), crop_foreground=-500,
                          foreground_margin=(2, 2, 2), multiple_of=(None, 16, 16), order=order)
    # The box of the phantom's body, applied to the coordinate image through its record.
    _, record = preprocess(source.with_array(_phantom()[0]), spec)
    x, same = preprocess(image, spec, record=record)
    assert same == record and record.box_shape == (18, 39, 47)  # z 1..18, y 11..49, x 4..50
    grid = preprocessed_image(x, image, record)
    out_index = np.stack(np.meshgrid(*(np.arange(n) for n in x.shape), indexing="ij"), axis=-1)
    position = grid.index_to_physical(out_index.reshape(-1, 3))
    # Where each output voxel lies in the source, to keep the voxels whose four cubic taps are
    # all inside the box (edge voxels are repeated, which is not linear).
    src = source.physical_to_index(position)
    lo, hi = np.asarray(record.box_start), np.asarray(record.box_start) + record.box_shape - 1
    inside = np.all((src >= lo + [0, 1, 1] - 1e-6) & (src <= hi - [0, 1, 1] + 1e-6), axis=1)
    assert inside.sum() > x.size / 2  # most of the volume is checked (67%)
    err = np.abs(x.reshape(-1)[inside] - position[inside, component])
    assert err.max() < 1e-4, f"max error {err.max():.2e} mm"
