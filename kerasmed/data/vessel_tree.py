"""Branching, tapering tube trees and their voxelisation, for the synthetic CT phantom.

A tree grows generation by generation, vectorised over all active branches: each branch is a
straight tapered tube (a capsule), and ends in a major child that nearly continues its direction
and a thinner minor child that turns away. Children lean towards the cranio-caudal axis, as
pulmonary vessels do, so an axial slice cuts most of them across and shows round blobs.

All coordinates are LPS millimetres `(x, y, z)`; a segment row is `(ax, ay, az, bx, by, bz, ra, rb)`
(start, end, start radius, end radius).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_EZ = np.array([0.0, 0.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _turn(rng: np.random.Generator, d: np.ndarray, angle: np.ndarray, axis=None):
    """Rotate unit vectors `d` (M, 3) by `angle` (M,) about random axes perpendicular to them."""
    if axis is None:
        axis = _unit(np.cross(d, rng.standard_normal(d.shape)))
    a = angle[:, None]
    return d * np.cos(a) + np.cross(axis, d) * np.sin(a), axis


def grow_tree(
    rng: np.random.Generator,
    starts: np.ndarray,
    directions: np.ndarray,
    radii: np.ndarray,
    inside: Callable[[np.ndarray], np.ndarray],
    *,
    r_min: float = 0.9,
    length_per_radius: tuple[float, float] = (8.0, 14.0),
    cranio_caudal_bias: float = 0.45,
    max_generations: int = 14,
) -> np.ndarray:
    """Grow tapered branching tubes from root points until they are thinner than `r_min`.

    Args:
        rng: the case's random generator (the only source of randomness).
        starts: `(M, 3)` root positions (LPS mm).
        directions: `(M, 3)` initial directions.
        radii: `(M,)` root radii in mm.
        inside: maps `(N, 3)` points to a bool `(N,)`: where tubes may go (the lung).
        r_min: branches thinner than this (mm) are not grown.
        length_per_radius: branch length is drawn in this range times its radius.
        cranio_caudal_bias: how strongly children lean towards +-z (0 = not at all).
        max_generations: safety bound on the number of generations.

    Returns:
        `(N, 8)` float64 segments `(ax, ay, az, bx, by, bz, ra, rb)`.
    """
    segments = []
    pos, d, r = (
        np.asarray(starts, float),
        _unit(np.asarray(directions, float)),
        np.asarray(radii, float),
    )
    for _ in range(max_generations):
        if len(r) == 0:
            break
        length = np.clip(r * rng.uniform(*length_per_radius, size=r.shape), 5.0, 60.0)
        end = pos + d * length[:, None]
        ok = inside(end) & inside(pos + d * (0.5 * length[:, None]))
        # A branch about to leave the lung gets one shorter try before it is dropped.
        short = pos + d * (0.45 * length[:, None])
        retry = ~ok & inside(short)
        end = np.where(retry[:, None], short, end)
        keep = ok | retry
        pos, d, r, end = pos[keep], d[keep], r[keep], end[keep]
        r_end = r * 0.9
        segments.append(np.column_stack([pos, end, r, r_end]))

        major_r = r_end * rng.uniform(0.82, 0.93, size=r.shape)
        minor_r = r_end * rng.uniform(0.5, 0.75, size=r.shape)
        major_d, axis = _turn(rng, d, np.deg2rad(rng.uniform(8, 28, size=r.shape)))
        minor_d, _ = _turn(rng, d, -np.deg2rad(rng.uniform(30, 65, size=r.shape)), axis)
        children = np.concatenate([major_d, minor_d])
        lean = np.sign(children[:, 2:3] + 1e-9) * _EZ[None, :]
        children = _unit(children + cranio_caudal_bias * lean)
        child_r = np.concatenate([major_r, minor_r])
        grow = child_r >= r_min
        pos = np.concatenate([end, end])[grow]
        d, r = children[grow], child_r[grow]
    if not segments:
        return np.zeros((0, 8))
    return np.concatenate(segments)


def render_capsules(
    segments: np.ndarray,
    shape: tuple[int, int, int],
    origin: np.ndarray,
    spacing: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Voxelise tapered capsules as a partial-volume occupancy in [0, 1].

    Each voxel gets `clip((r - distance) / w + 0.5, 0, 1)` for the nearest capsule, with `w` the
    in-plane voxel size, so edges are anti-aliased as a scanner's partial volume would make them.

    Args:
        segments: `(N, 8)` rows `(ax, ay, az, bx, by, bz, ra, rb)` in LPS mm.
        shape: volume shape `(z, y, x)` of an axial grid.
        origin: LPS `(x, y, z)` of voxel `[0, 0, 0]`.
        spacing: `(sz, sy, sx)` in mm.
        out: optional float32 `(z, y, x)` array to accumulate into (elementwise maximum).

    Returns:
        float32 `(z, y, x)` occupancy.
    """
    occ = np.zeros(shape, np.float32) if out is None else out
    spacing_xyz = np.asarray(spacing, float)[::-1]
    shape_xyz = np.asarray(shape)[::-1]
    width = float(min(spacing_xyz[:2]))
    for ax, ay, az, bx, by, bz, ra, rb in segments:
        a, b = np.array([ax, ay, az]), np.array([bx, by, bz])
        pad = max(ra, rb) + 1.5 * width
        lo = np.floor((np.minimum(a, b) - pad - origin) / spacing_xyz).astype(int)
        hi = np.ceil((np.maximum(a, b) + pad - origin) / spacing_xyz).astype(int) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, shape_xyz)
        if np.any(hi <= lo):
            continue
        gx = origin[0] + np.arange(lo[0], hi[0]) * spacing_xyz[0] - a[0]
        gy = origin[1] + np.arange(lo[1], hi[1]) * spacing_xyz[1] - a[1]
        gz = origin[2] + np.arange(lo[2], hi[2]) * spacing_xyz[2] - a[2]
        gx, gy, gz = gx[None, None, :], gy[None, :, None], gz[:, None, None]
        ab = b - a
        t = np.clip((gx * ab[0] + gy * ab[1] + gz * ab[2]) / max(ab @ ab, 1e-12), 0.0, 1.0)
        dist = np.sqrt((gx - t * ab[0]) ** 2 + (gy - t * ab[1]) ** 2 + (gz - t * ab[2]) ** 2)
        value = np.clip((ra + t * (rb - ra) - dist) / width + 0.5, 0.0, 1.0)
        view = occ[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        np.maximum(view, value, out=view)
    return occ
