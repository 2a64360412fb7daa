"""Findings (CSV/JSON) and PNG overlay writers, against values worked out by hand."""

import csv
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import mask_findings, write_findings, write_overlay
from serving.io.findings import FINDING_COLUMNS

SPACING = (2.5, 0.7, 0.8)
ORIGIN = (-10.0, 20.0, 30.0)  # LPS of voxel (0, 0, 0); axial: x -> L, y -> P, z -> S


def _mask():
    """A 3x4x5 cube of label 1 at z 2-4, y 3-6, x 5-9; one lone label-1 voxel at (8, 10, 12);
    a 2x2x2 cube of label 2 at the corner."""
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:5, 3:7, 5:10] = 1
    labels[8, 10, 12] = 1
    labels[6:8, 0:2, 0:2] = 2
    return Image(labels, SPACING, ORIGIN, modality="SEG")


def _probability(mask):
    p = np.zeros(mask.shape, np.float32)
    p[mask.array > 0] = 0.5
    p[3, 4, 6] = 0.9  # inside the big cube
    return mask.with_array(p, modality="OT")


def _expected_cube():
    """The big cube by hand: centroid voxel (3, 4.5, 7); L = -10 + 7 * 0.8, P = 20 + 4.5 * 0.7,
    S = 30 + 3 * 2.5; 60 voxels of 2.5 * 0.7 * 0.8 = 1.4 mm3."""
    return {
        "id": 1, "label": 1, "class_name": "nodule", "voxels": 60,
        "volume_mm3": 84.0, "volume_ml": 0.084,
        "centroid_z": 3.0, "centroid_y": 4.5, "centroid_x": 7.0,
        "centroid_l_mm": -4.4, "centroid_p_mm": 23.15, "centroid_s_mm": 37.5,
        "bbox_min_z": 2, "bbox_min_y": 3, "bbox_min_x": 5,
        "bbox_max_z": 4, "bbox_max_y": 6, "bbox_max_x": 9,
        "bbox_min_l_mm": -6.0, "bbox_min_p_mm": 22.1, "bbox_min_s_mm": 35.0,
        "bbox_max_l_mm": -2.8, "bbox_max_p_mm": 24.2, "bbox_max_s_mm": 40.0,
        "max_probability": 0.9, "mean_probability": (59 * 0.5 + 0.9) / 60,
    }  # fmt: skip


def _assert_row(row, expected):
    assert set(row) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float):
            assert float(row[key]) == pytest.approx(value, abs=1e-6), key
        elif isinstance(value, int):
            assert int(row[key]) == value, key
        else:
            assert row[key] == value, key


def test_findings_of_a_known_cube_by_hand():
    mask = _mask()
    findings = mask_findings(mask, _probability(mask), class_names=["nodule", "vessel"])
    assert [(f["id"], f["label"], f["voxels"]) for f in findings] == [(1, 1, 60), (2, 1, 1), (3, 2, 8)]
    _assert_row(findings[0], _expected_cube())
    lone = findings[1]
    assert (lone["centroid_z"], lone["centroid_y"], lone["centroid_x"]) == (8.0, 10.0, 12.0)
    assert (lone["centroid_l_mm"], lone["centroid_p_mm"], lone["centroid_s_mm"]) == pytest.approx(
        (-10 + 12 * 0.8, 20 + 10 * 0.7, 30 + 8 * 2.5)
    )
    assert findings[2]["class_name"] == "vessel"
    assert findings[2]["volume_mm3"] == pytest.approx(8 * 1.4)
    assert list(findings[0]) == list(FINDING_COLUMNS)


def test_findings_csv_and_json_hold_the_same_values(tmp_path):
    mask = _mask()
    findings = mask_findings(mask, _probability(mask), class_names=["nodule", "vessel"])
    csv_path = write_findings(findings, tmp_path / "findings.csv")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    _assert_row(rows[0], _expected_cube())
    document = json.loads(write_findings(findings, tmp_path / "findings.json").read_text())
    assert len(document["findings"]) == 3
    _assert_row(document["findings"][0], _expected_cube())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.csv", "findings.json"]


def test_findings_without_probability_and_of_an_empty_mask(tmp_path):
    findings = mask_findings(_mask())
    assert findings[0]["class_name"] == "class 1"
    assert findings[0]["max_probability"] is None and findings[0]["mean_probability"] is None
    empty = mask_findings(_mask().with_array(np.zeros((10, 12, 14), np.uint8)))
    assert empty == []
    with open(write_findings(empty, tmp_path / "none.csv"), newline="") as f:
        assert next(csv.reader(f)) == list(FINDING_COLUMNS)


def test_findings_on_an_oblique_grid_follow_index_to_physical():
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rotation @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mask = _mask().with_array(_mask().array, direction=direction)
    cube = mask_findings(mask)[0]
    # centroid (3, 4.5, 7) in mm: origin + direction @ (index * spacing), written out
    expected = np.array(ORIGIN) + direction @ (np.array([3.0, 4.5, 7.0]) * SPACING)
    got = [cube["centroid_l_mm"], cube["centroid_p_mm"], cube["centroid_s_mm"]]
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_connectivity_decides_whether_corner_neighbours_join():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1
    mask = Image(labels, (1.0, 1.0, 1.0))
    assert len(mask_findings(mask, connectivity=1)) == 2
    assert len(mask_findings(mask, connectivity=3)) == 1
    with pytest.raises(ConfigError, match="connectivity"):
        mask_findings(mask, connectivity=4)


def test_findings_refuse_bad_inputs(tmp_path):
    mask = _mask()
    off_grid = _probability(mask).with_array(np.zeros(mask.shape, np.float32), origin=(0.0, 0.0, 0.0))
    with pytest.raises(DataError, match="`probability` must be on the grid"):
        mask_findings(mask, off_grid)
    with pytest.raises(DataError, match="names 1.*label 2"):
        mask_findings(mask, class_names=["nodule"])
    with pytest.raises(DataError, match="whole numbers"):
        mask_findings(mask.with_array(np.full(mask.shape, 0.5)))
    with pytest.raises(DataError, match=r"\.csv or \.json"):
        write_findings([], tmp_path / "findings.txt")


def test_per_class_probability_channels_are_read_per_label():
    mask = _mask()
    channels = np.zeros((*mask.shape, 3), np.float32)
    channels[..., 1] = 0.7
    channels[..., 2] = 0.2
    per_class = Image(channels, SPACING, ORIGIN, channels=3)
    rows = mask_findings(mask, per_class)
    assert [r["max_probability"] for r in rows] == pytest.approx([0.7, 0.7, 0.2])


def _ct(modality="CT"):
    values = np.linspace(-1200.0, 400.0, 6 * 20 * 24, dtype=np.float32).reshape(6, 20, 24)
    return Image(values, (2.0, 0.7, 0.8), modality=modality)


def _grey(values, center, width):
    """The plain windowed slice, by hand."""
    lo = center - width / 2
    return np.rint(np.clip((values.astype(np.float64) - lo) / width * 255, 0, 255)).astype(np.uint8)


def _pixels(path):
    with PILImage.open(path) as png:
        return np.asarray(png.convert("RGB"))


def test_overlay_png_changes_exactly_the_mask_pixels(tmp_path):
    ct = _ct()
    labels = np.zeros(ct.shape, np.uint8)
    labels[3, 5:12, 6:15] = 1
    labels[3, 14:17, 2:5] = 2
    labels[1, 2:4, 2:4] = 1  # a smaller region on another slice: not the default slice
    path = write_overlay(ct, ct.with_array(labels), tmp_path / "overlay.png")
    with PILImage.open(path) as png:
        assert png.size == (24, 20) and png.mode == "RGB"
        rgb = np.asarray(png)
    grey = _grey(ct.array[3], -600.0, 1500.0)  # CT: the lung window by default
    outside = labels[3] == 0
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel][outside], grey[outside])
    changed = (rgb != grey[..., None]).any(axis=-1)
    assert changed[~outside].all()
    assert tuple(rgb[5, 6]) == (255, 0, 0)  # outline of label 1 at full colour
    assert tuple(rgb[14, 2]) == (0, 200, 0)  # label 2
    assert not list(tmp_path.glob(".*"))


def test_overlay_with_explicit_slice_window_and_2d_image(tmp_path):
    ct = _ct(modality="MR")
    labels = np.zeros(ct.shape, np.uint8)
    labels[0, 1:3, 1:3] = 1
    path = write_overlay(ct, labels, tmp_path / "mr.png", slice_index=0, window=(-400.0, 800.0),
                         contour=False)
    rgb = _pixels(path)
    grey = _grey(ct.array[0], -400.0, 800.0)
    np.testing.assert_array_equal(rgb[5:, :, 1], grey[5:])
    assert (rgb[1:3, 1:3] != grey[1:3, 1:3, None]).any(axis=-1).all()
    flat = Image(ct.array[0], (0.7, 0.8), modality="OT")
    path = write_overlay(flat, labels[0], tmp_path / "flat.png")
    assert _pixels(path).shape == (20, 24, 3)


def test_overlay_refuses_a_mask_off_the_grid_and_bad_options(tmp_path):
    ct = _ct()
    with pytest.raises(DataError, match=r"mask shape=\(5, 20, 24\), image shape=\(6, 20, 24\)"):
        write_overlay(ct, Image(np.zeros((5, 20, 24), np.uint8), ct.spacing), tmp_path / "o.png")
    with pytest.raises(DataError, match="slice_index"):
        write_overlay(ct, np.zeros(ct.shape, np.uint8), tmp_path / "o.png", slice_index=6)
    with pytest.raises(ConfigError, match="width"):
        write_overlay(ct, np.zeros(ct.shape, np.uint8), tmp_path / "o.png", window=(0.0, 0.0))
    assert not (tmp_path / "o.png").exists()
