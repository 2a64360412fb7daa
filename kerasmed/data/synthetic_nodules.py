"""Placing and drawing lung nodules for the synthetic CT phantom (see `synthetic_ct`).

A nodule is a lobulated ball: its radius along unit direction `u` is
`R * (1 + sum_k a_k * cos(f_k * pi * (u . v_k) + phi_k))`, a smooth bumpy surface. Solid nodules
have a sharp (partial-volume) edge; ground-glass ones fade out over a third of their radius.

Placement is by rejection: a candidate centre is accepted when the share of the ball inside the
lung suits the attachment ("none": all of it; "pleural": most of it, with the surface reaching
past the pleura; "vascular": nearly all of it, touching a vessel of radius >= 1.5 mm), the ball
fits the field of view, and it does not overlap an earlier nodule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

KINDS = ("solid", "ground_glass")
ATTACHMENTS = ("none", "pleural", "vascular")
_ATTACHMENT_P = (0.4, 0.3, 0.3)
_SOLID_P = 0.7
DIAMETER_MM = (3.0, 30.0)
FIRST_DIAMETER_MM = (8.0, 30.0)


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.column_stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)])


_SURFACE = _fibonacci_sphere(64)
_g = np.linspace(-1, 1, 9)
_BALL = np.stack(np.meshgrid(_g, _g, _g, indexing="ij"), -1).reshape(-1, 3)
_BALL = _BALL[np.linalg.norm(_BALL, axis=1) <= 1.0]


@dataclasses.dataclass
class Nodule:
    """One nodule: LPS centre (mm), radius (mm), kind, attachment and drawing parameters."""

    center: np.ndarray
    radius: float
    kind: str
    attachment: str
    hu: float
    lobes: list[tuple[float, float, np.ndarray, float]]

    def to_dict(self) -> dict:
        x, y, z = (round(float(v), 3) for v in self.center)
        return {
            "center_x_mm": x,
            "center_y_mm": y,
            "center_z_mm": z,
            "diameter_mm": round(2.0 * self.radius, 3),
            "kind": self.kind,
            "attachment": self.attachment,
        }


def _diameters(rng: np.random.Generator, count: int, d_max: float) -> list[float]:
    lo, hi = DIAMETER_MM[0], max(min(DIAMETER_MM[1], d_max), DIAMETER_MM[0])
    first_lo = FIRST_DIAMETER_MM[0] if hi >= FIRST_DIAMETER_MM[0] else lo
    sizes = [rng.uniform(first_lo, hi)]
    sizes += list(np.exp(rng.uniform(np.log(lo), np.log(hi), count - 1)))
    return [float(s) for s in sizes]


def place_nodules(
    rng: np.random.Generator,
    anat,
    in_lung: Callable[[np.ndarray], np.ndarray],
    vessels: np.ndarray,
    fov: tuple[np.ndarray, np.ndarray],
) -> list[Nodule]:
    """Draw 1 to 3 nodules and find each a place (see module docstring).

    Args:
        rng: the case's random generator.
        anat: the case's `ChestAnatomy` (for the lungs' extent).
        in_lung: bool of `(N, 3)` LPS points: inside a lung.
        vessels: `(M, 8)` vessel segments, as from `vessel_tree.grow_tree`.
        fov: LPS `(x, y, z)` of the first and last voxel centres.

    Returns:
        The placed nodules. A nodule whose attachment cannot be met is placed free instead, and
        shrunk (not below 3 mm) if even that fails; it is left out only if no place is found at
        all, which takes a field of view far too small for a chest.
    """
    lo, hi = np.minimum(*fov), np.maximum(*fov)
    lung_width = min(min(2 * lung["ax"], 2 * lung["ay"]) for lung in anat.lungs)
    d_max = min(DIAMETER_MM[1], 0.8 * (hi[2] - lo[2]), 0.45 * lung_width)
    count = int(rng.integers(1, 4))
    boxes = [
        (
            np.array([lung["cx"] - lung["ax"], lung["cy"] - lung["ay"], lo[2]]),
            np.array([lung["cx"] + lung["ax"], lung["cy"] + lung["ay"], hi[2]]),
        )
        for lung in anat.lungs
    ]
    thick = vessels[np.minimum(vessels[:, 6], vessels[:, 7]) >= 1.5] if len(vessels) else vessels
    thick = thick[in_lung((thick[:, :3] + thick[:, 3:6]) / 2)] if len(thick) else thick

    placed: list[Nodule] = []
    for diameter in _diameters(rng, count, d_max):
        kind = KINDS[0] if rng.random() < _SOLID_P else KINDS[1]
        attachment = ATTACHMENTS[int(rng.choice(3, p=_ATTACHMENT_P))]
        radius = diameter / 2
        center = None
        for attempt in range(400):
            mode = attachment if attempt < 60 else "none"  # fall back to a free nodule
            if attempt and attempt % 100 == 0:
                radius = max(0.85 * radius, DIAMETER_MM[0] / 2)
            center = _candidate(rng, mode, radius, boxes, in_lung, thick)
            if center is not None and _fits(center, radius, mode, in_lung, lo, hi, placed):
                attachment = mode
                break
            center = None
        if center is None:
            continue
        hu = rng.uniform(10.0, 50.0) if kind == "solid" else rng.uniform(-520.0, -320.0)
        lobes = [
            (
                rng.uniform(0.02, 0.07),
                float(f),
                _unit(rng.standard_normal(3)),
                rng.uniform(0, 2 * np.pi),
            )
            for f in rng.integers(1, 4, size=3)
        ]
        placed.append(Nodule(center, float(radius), kind, attachment, float(hu), lobes))
    return placed


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _candidate(rng, mode, radius, boxes, in_lung, thick) -> np.ndarray | None:
    if mode == "vascular":
        if len(thick) == 0:
            return None
        seg = thick[int(rng.integers(len(thick)))]
        a, b = seg[:3], seg[3:6]
        t = rng.uniform(0.2, 0.8)
        axis = _unit(b - a)
        side = _unit(np.cross(axis, rng.standard_normal(3)))
        vessel_r = seg[6] + t * (seg[7] - seg[6])
        return a + t * (b - a) + side * (0.9 * radius + vessel_r)
    box_lo, box_hi = boxes[int(rng.integers(len(boxes)))]
    points = rng.uniform(box_lo, box_hi, size=(32, 3))
    points = points[in_lung(points)]
    if len(points) == 0:
        return None
    if mode == "none":
        return points[0]
    # Pleural: walk from an interior point along a random direction to the lung boundary, then
    # step back so that about 40% of the radius sticks out through the pleura.
    direction = _unit(rng.standard_normal(3) * np.array([1.0, 1.0, 0.3]))
    steps = np.arange(0.0, 200.0, 1.0)
    inside = in_lung(points[0][None, :] + steps[:, None] * direction[None, :])
    out = np.flatnonzero(~inside)
    if len(out) == 0:
        return None
    boundary = points[0] + (steps[out[0]] - 0.5) * direction
    return boundary - direction * (0.6 * radius)


def _fits(center, radius, mode, in_lung, lo, hi, placed) -> bool:
    if np.any(center - radius < lo - 0.5) or np.any(center + radius > hi + 0.5):
        return False
    if any(np.linalg.norm(center - n.center) < radius + n.radius + 3.0 for n in placed):
        return False
    share = float(np.mean(in_lung(center + radius * _BALL)))
    if mode == "none":
        return share == 1.0 and bool(np.all(in_lung(center + (radius + 1.0) * _SURFACE)))
    if mode == "pleural":
        return 0.7 <= share <= 0.97 and bool(in_lung(center[None, :])[0])
    return share >= 0.95


def render_nodules(
    ct: np.ndarray,
    nodules: list[Nodule],
    origin: np.ndarray,
    spacing: np.ndarray,
    cavity: np.ndarray | None = None,
) -> np.ndarray:
    """Draw nodules into `ct` (in place) and return their uint8 mask.

    Args:
        ct: float32 `(z, y, x)` HU volume on an axial grid.
        nodules: from `place_nodules`.
        origin: LPS `(x, y, z)` of voxel `[0, 0, 0]`.
        spacing: `(sz, sy, sx)` mm.
        cavity: bool `(z, y, x)` lung cavity. A nodule is a lung lesion: a juxta-pleural one
            presses flat against the pleura instead of growing into the chest wall, so both the
            drawing and the mask are clipped to the cavity. Without the clip, part of the mask
            would lie in chest wall of the same HU, with no boundary any reader could see.

    Returns:
        uint8 `(z, y, x)` mask, 1 where `distance <= lobulated radius` (inside `cavity`).
    """
    mask = np.zeros(ct.shape, np.uint8)
    spacing_xyz = np.asarray(spacing, float)[::-1]
    shape_xyz = np.asarray(ct.shape)[::-1]
    width = float(min(spacing_xyz[:2]))
    for nod in nodules:
        pad = nod.radius * 1.3 + 2.0 * width
        lo = np.maximum(np.floor((nod.center - pad - origin) / spacing_xyz).astype(int), 0)
        hi = np.minimum(
            np.ceil((nod.center + pad - origin) / spacing_xyz).astype(int) + 1, shape_xyz
        )
        if np.any(hi <= lo):
            continue
        g = [origin[a] + np.arange(lo[a], hi[a]) * spacing_xyz[a] - nod.center[a] for a in range(3)]
        dx, dy, dz = g[0][None, None, :], g[1][None, :, None], g[2][:, None, None]
        dist = np.sqrt(dx**2 + dy**2 + dz**2)
        safe = np.maximum(dist, 1e-6)
        bump = 1.0
        for amp, freq, v, phase in nod.lobes:
            cos_angle = (dx * v[0] + dy * v[1] + dz * v[2]) / safe
            bump = bump + amp * np.cos(freq * np.pi * cos_angle + phase)
        r_dir = nod.radius * bump
        edge = width if nod.kind == "solid" else 0.35 * nod.radius
        occ = np.clip((r_dir - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)
        box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        inside = np.ones(occ.shape, bool) if cavity is None else cavity[box]
        occ *= inside
        sub = ct[box]
        drawn = sub + occ * (np.float32(nod.hu) - sub)
        if nod.kind == "solid":
            drawn = np.where(sub > 200.0, sub, drawn)  # a nodule against a rib leaves the rib
        else:
            drawn = np.maximum(drawn, sub)  # vessels and wall stay visible through ground glass
        ct[box] = drawn
        mask[box] |= ((dist <= r_dir) & inside).astype(np.uint8)
    return mask
