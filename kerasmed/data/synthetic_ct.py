"""A seeded chest-CT phantom with lung nodules and their ground-truth masks.

`make_case(seed)` builds one axial CT volume in Hounsfield units: air around an elliptical body
with a subcutaneous fat layer, ribs and a spine, two unequal lungs that taper cranially and
caudally, a branching vessel tree in each lung, and 1 to 3 nodules (solid or ground-glass; free,
touching the pleura or touching a vessel), then scanner blur and slightly correlated noise.

The vessels are the point: in an axial slice they are round soft-tissue blobs of 2-8 mm, just like
nodules, so a plain "HU > -500 inside the lung" threshold finds far more vessel than nodule (mean
Dice well under 0.5) and a model has to learn shape across slices.

Anatomy sizes scale with the field of view (`shape * spacing`), so a small test volume still holds
a whole chest; vessel radii and nodule diameters are in millimetres. Everything is drawn from
`numpy.random.default_rng(seed)`: the same seed gives bit-identical arrays.

Example:
    >>> case = make_case(seed=3)
    >>> case.ct.array.shape, case.ct.array.dtype        # ((48, 256, 256), float32)
    >>> case.nodules[0]["diameter_mm"], case.nodules[0]["kind"]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage

from kerasmed.data.synthetic_nodules import place_nodules, render_nodules
from kerasmed.data.vessel_tree import grow_tree, render_capsules
from serving.errors import ConfigError
from serving.image import Image

# Bumped whenever the same seed would draw a different case, so stale datasets are regenerated.
GENERATOR_VERSION = 2

AIR_HU, FAT_HU, TISSUE_HU, RIB_HU, VERTEBRA_HU, DISC_HU = -1000.0, -100.0, 40.0, 700.0, 400.0, 90.0
SLICE_SPACING_MM = 2.5
IN_PLANE_SPACING_MM = (1.25, 1.45)
PERIPHERAL_SUBTREES = 120  # per lung; sets how crowded the periphery is with small vessels
ADULT_HALF_WIDTH_MM = 145.0  # body half-width of the default field of view
_LUNG_REACH = 0.82  # lungs end at this fraction of the body's normalised radius (chest wall inside)


@dataclasses.dataclass(frozen=True)
class SyntheticCase:
    """One phantom case.

    Attributes:
        ct: float32 Hounsfield units, `(z, y, x)`, axial LPS geometry.
        nodule_mask: uint8 `(z, y, x)`, 1 inside any nodule (clipped to the lung cavity).
        lung_mask: uint8 `(z, y, x)`, 1 in both lungs, vessels and intrapulmonary nodule parts
            included.
        nodules: one dict per nodule: `center_x_mm`, `center_y_mm`, `center_z_mm` (LPS),
            `diameter_mm`, `kind` ("solid" or "ground_glass"), `attachment` ("none",
            "pleural" or "vascular").
        seed: the seed that made the case.
    """

    ct: Image
    nodule_mask: Image
    lung_mask: Image
    nodules: list[dict[str, Any]]
    seed: int


class ChestAnatomy:
    """Random chest geometry of one case, evaluable on grids or on point lists.

    Every method takes LPS coordinates `x, y, z` (mm) that broadcast against each other: 1D
    axis vectors shaped `(1, 1, nx)`, `(1, ny, 1)`, `(nz, 1, 1)` for a grid, or `(N,)` points.
    """

    def __init__(
        self, rng: np.random.Generator, half_fov: tuple[float, float], z_range: tuple[float, float]
    ):
        wx, wy = half_fov
        u = rng.uniform
        self.bx = wx * u(0.80, 0.88)
        self.by = min(self.bx * u(0.64, 0.74), 0.92 * wy)
        self.yb = wy * u(-0.03, 0.03)
        self.power = u(2.2, 2.7)  # superellipse: a flatter back and sides than an ellipse
        self.fat = u(0.05, 0.10)
        self.z_mid = (z_range[0] + z_range[1]) / 2
        self.z_half = max((z_range[1] - z_range[0]) / 2, 1.0)
        self.lungs = []
        for side in (-1.0, 1.0):  # patient right (-x, LPS) then left
            self.lungs.append(
                dict(
                    cx=side * self.bx * u(0.42, 0.48),
                    cy=self.yb + self.by * u(0.0, 0.08),
                    ax=self.bx * u(0.35, 0.41) * (1.05 if side < 0 else 0.97),
                    ay=self.by * u(0.76, 0.86),
                    harmonics=[(k, u(0.0, 0.05), u(0, 2 * np.pi)) for k in (2, 3, 4)],
                    zc=u(-0.35, -0.1),
                    zh=u(1.25, 1.45),
                )
            )
        self.heart = (
            self.bx * u(0.05, 0.12),
            self.yb - self.by * u(0.15, 0.25),
            self.bx * u(0.22, 0.28),
            self.by * u(0.35, 0.45),
        )
        self.vertebra = (self.yb + self.by * u(0.58, 0.64), self.by * u(0.14, 0.18))
        self.trachea_r = u(7.0, 10.0)
        self.rib_count = int(rng.integers(10, 13))
        self.rib_phase = u(0, 2 * np.pi)
        self.rib_pitch = u(60, 90)  # mm of z over which a rib's arcs go once around

    def zn(self, z):
        return (z - self.z_mid) / self.z_half

    def body_rho(self, x, y):
        """Normalised superellipse radius of the body outline (1 on the skin)."""
        p = self.power
        return (np.abs(x / self.bx) ** p + np.abs((y - self.yb) / self.by) ** p) ** (1.0 / p)

    def body_scale(self, z):
        return 1.0 - 0.04 * self.zn(z)  # slightly wider towards the abdomen

    def lung_profile(self, lung, z):
        return np.sqrt(np.clip(1.0 - ((self.zn(z) - lung["zc"]) / lung["zh"]) ** 2, 1e-4, 1.0))

    def lungs_mask(self, x, y, z) -> np.ndarray:
        """Bool: inside either lung (broadcast of x, y, z)."""
        inside = False
        for lung in self.lungs:
            dx, dy = x - lung["cx"], y - lung["cy"]
            theta = np.arctan2(dy, dx)
            wobble = 1.0 + sum(a * np.cos(k * theta + ph) for k, a, ph in lung["harmonics"])
            q = (dx / lung["ax"]) ** 2 + (dy / lung["ay"]) ** 2
            inside = inside | (q <= (wobble * self.lung_profile(lung, z)) ** 2)
        hx, hy, hax, hay = self.heart
        heart_prof = np.clip(1.0 - ((self.zn(z) + 0.5) / 1.1) ** 2, 0.0, 1.0)
        heart = ((x - hx) / hax) ** 2 + ((y - hy) / hay) ** 2 <= heart_prof
        vy, vr = self.vertebra
        spine = (x**2 + (y - vy) ** 2) <= (vr + 10.0) ** 2
        wall = self.body_rho(x, y) <= _LUNG_REACH * self.body_scale(z)
        return inside & wall & ~heart & ~spine & (np.abs(x) >= 0.07 * self.bx)

    def hilum(self, lung) -> np.ndarray:
        return np.array(
            [
                lung["cx"] - np.sign(lung["cx"]) * 0.55 * lung["ax"],
                lung["cy"] - 0.05 * lung["ay"],
                self.z_mid,
            ]
        )


def _smooth_field(
    rng: np.random.Generator, axes_mm: list[np.ndarray], scale_mm: float
) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field on the grid `axes_mm` (z, y, x), float32.

    A coarse random lattice (one node per `scale_mm`) is interpolated with Gaussian weights,
    separably, which costs a few small matrix products instead of a full-volume filter.
    """
    mats = []
    for ax in axes_mm:
        n_nodes = max(int(np.ptp(ax) / scale_mm) + 3, 2)
        nodes = np.linspace(ax.min() - scale_mm, ax.max() + scale_mm, n_nodes)
        w = np.exp(-0.5 * ((ax[:, None] - nodes[None, :]) / scale_mm) ** 2)
        mats.append((w / w.sum(axis=1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal([m.shape[1] for m in mats]).astype(np.float32)
    field = np.einsum("zc,cyx->zyx", mats[0], np.einsum("yb,cbx->cyx", mats[1], coarse @ mats[2].T))
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _default_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    in_plane = round(float(rng.uniform(*IN_PLANE_SPACING_MM)), 3)
    return (SLICE_SPACING_MM, in_plane, in_plane)


def make_case(
    seed: int, shape: tuple[int, int, int] = (48, 256, 256), spacing=None
) -> SyntheticCase:
    """Build one deterministic chest-CT phantom with nodules.

    Args:
        seed: any non-negative int; the same seed gives identical arrays.
        shape: volume shape `(z, y, x)`, each at least 8.
        spacing: `(sz, sy, sx)` mm; by default 2.5 mm slices and an in-plane spacing drawn per
            case in [1.25, 1.45] mm.

    Returns:
        A `SyntheticCase` (CT float32 HU, uint8 nodule and lung masks, nodule list).

    Raises:
        ConfigError: if `shape` or `spacing` is invalid.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ConfigError(f"`shape` must be 3 sizes (z, y, x), each >= 8. Received: shape={shape}")
    rng = np.random.default_rng(seed)
    spacing = _default_spacing(rng) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(
            f"`spacing` must be 3 positive values (z, y, x) in mm. Received: spacing={spacing}"
        )
    nz, ny, nx = shape
    sz, sy, sx = spacing
    # LPS origin (x, y, z) of voxel [0, 0, 0]: centred in-plane, at a plausible table position.
    origin = np.array(
        [-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, round(float(rng.uniform(-250, -150)), 1)]
    )
    xs = origin[0] + np.arange(nx) * sx
    ys = origin[1] + np.arange(ny) * sy
    zs = origin[2] + np.arange(nz) * sz
    X, Y, Z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
    anat = ChestAnatomy(rng, (nx * sx / 2, ny * sy / 2), (zs[0], zs[-1]))

    ct = np.full(shape, AIR_HU, np.float32)
    rho = anat.body_rho(xs[None, :], ys[:, None])[None]
    scale = anat.body_scale(zs)[:, None, None]
    ct[rho <= scale] = FAT_HU
    ct[rho <= scale * (1.0 - anat.fat)] = TISSUE_HU
    _add_bones(ct, anat, xs, ys, zs, rng)

    lung = anat.lungs_mask(X, Y, Z)
    texture = _smooth_field(rng, [zs, ys, xs], scale_mm=12.0)
    parenchyma = np.float32(rng.uniform(-865, -845)) + np.float32(12.0) * texture
    # Dependent (posterior, +y) lung is denser, as in a supine patient.
    gravity = rng.uniform(8.0, 20.0) * (ys - anat.yb) / anat.by
    parenchyma += gravity.astype(np.float32)[None, :, None]
    ct[lung] = parenchyma[lung]

    def in_lung(p):
        return anat.lungs_mask(p[:, 0], p[:, 1], p[:, 2])

    vessels = _grow_vessels(rng, anat, in_lung)
    occ = render_capsules(vessels, shape, origin, np.array(spacing))
    occ *= lung
    ct += occ * (np.float32(TISSUE_HU) - ct)

    fov = (origin, origin + np.array([nx - 1, ny - 1, nz - 1]) * np.array([sx, sy, sz]))
    nodules = place_nodules(rng, anat, in_lung, vessels, fov)
    nodule_mask = render_nodules(ct, nodules, origin, np.array(spacing), cavity=lung)

    # Noise goes in before the blur, so the blur gives it the slight correlation of real CT noise;
    # its amplitude is pre-scaled so that the blurred noise has the drawn standard deviation.
    sigma = (0.4, 0.6, 0.6)
    noise_sd = rng.uniform(15.0, 25.0)
    gain = np.prod([np.sqrt(np.sum(_gauss_kernel(s) ** 2)) for s in sigma])
    ct += rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sd / gain)
    ct = ndimage.gaussian_filter(ct, sigma=sigma, mode="nearest")

    geometry = dict(spacing=(sz, sy, sx), origin=tuple(origin))
    return SyntheticCase(
        ct=Image(
            ct,
            modality="CT",
            metadata={"generator": "kerasmed.synthetic_ct", "seed": int(seed)},
            **geometry,
        ),
        nodule_mask=Image(nodule_mask, modality="SEG", **geometry),
        lung_mask=Image(lung.astype(np.uint8), modality="SEG", **geometry),
        nodules=[nodule.to_dict() for nodule in nodules],
        seed=int(seed),
    )


def _gauss_kernel(sigma: float) -> np.ndarray:
    """The 1D kernel scipy's gaussian_filter uses (truncate=4)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def _add_bones(ct: np.ndarray, anat: ChestAnatomy, xs, ys, zs, rng: np.random.Generator) -> None:
    """Ribs as short bright arcs in the chest wall, and a vertebral body with discs."""
    rho = anat.body_rho(xs[None, :], ys[:, None])
    theta = np.arctan2((ys[:, None] - anat.yb) / anat.by, xs[None, :] / anat.bx)
    scale = anat.body_scale(zs)
    iy, ix = np.nonzero((rho >= 0.845 * scale.min()) & (rho <= 0.885 * scale.max()))
    ring = (rho[iy, ix][None, :] >= 0.845 * scale[:, None]) & (
        rho[iy, ix][None, :] <= 0.885 * scale[:, None]
    )
    # Ribs slope caudally, so each slice cuts them at shifting angles.
    phase = (
        anat.rib_count * theta[iy, ix][None, :]
        + 2 * np.pi * zs[:, None] / anat.rib_pitch
        + anat.rib_phase
    )
    rib = ring & (np.cos(phase) > 0.55)
    ct[:, iy, ix] = np.where(rib, np.float32(RIB_HU), ct[:, iy, ix])

    vy, vr = anat.vertebra
    body2d = (xs[None, :] ** 2 + (ys[:, None] - vy) ** 2) <= vr**2
    canal_y = vy + vr + 7.0
    canal = (xs[None, :] ** 2 + (ys[:, None] - canal_y) ** 2) <= 6.0**2
    process = (
        (np.abs(xs[None, :]) <= 5.0)
        & (ys[:, None] > canal_y + 6.0)
        & (ys[:, None] < canal_y + 6.0 + 0.6 * vr + 8.0)
    )
    arch = ((xs[None, :] ** 2 + (ys[:, None] - canal_y) ** 2) <= 11.0**2) & ~canal
    disc = np.mod(zs - zs[0] + rng.uniform(0, 28.0), 28.0) < 5.0  # 5 mm disc per 28 mm level
    ct[:, body2d] = np.where(disc[:, None], np.float32(DISC_HU), np.float32(VERTEBRA_HU))
    ct[:, arch | process] = np.float32(VERTEBRA_HU + 150.0)
    ct[:, canal] = np.float32(TISSUE_HU - 20.0)
    trachea = (
        xs[None, :] ** 2 + (ys[:, None] - (vy - vr - anat.trachea_r - 6.0)) ** 2
    ) <= anat.trachea_r**2
    ty, tx = np.nonzero(trachea)
    upper = np.flatnonzero(anat.zn(zs) > 0.1)  # the trachea divides below mid-chest
    ct[upper[:, None], ty[None, :], tx[None, :]] = np.float32(AIR_HU)


def _grow_vessels(rng: np.random.Generator, anat: ChestAnatomy, in_lung) -> np.ndarray:
    """Pulmonary vessel trees: trunks fanning out from each hilum, plus peripheral subtrees.

    Trees grown only from the hilum leave the periphery empty (branches that would leave the lung
    are dropped), so smaller subtrees are also seeded at random places in each lung, pointing
    away from the hilum as the vessels there do. In a chest narrower than an adult's (a small
    test field of view) radii shrink with it, down to half, and the subtree count with its area,
    so the vessel share of the lung stays about the same.
    """
    size = float(np.clip(anat.bx / ADULT_HALF_WIDTH_MM, 0.5, 1.0))
    n_sub = max(int(PERIPHERAL_SUBTREES * (anat.bx / ADULT_HALF_WIDTH_MM) ** 2), 4)
    trees = []
    for lung in anat.lungs:
        hilum = anat.hilum(lung)
        lateral = np.sign(lung["cx"])
        n = int(rng.integers(9, 13))
        dirs = np.column_stack(
            [
                lateral * rng.uniform(0.1, 0.9, n),
                rng.uniform(-0.8, 0.8, n),
                np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * rng.uniform(0.4, 1.2, n),
            ]
        )
        starts = hilum[None, :] + rng.normal(0.0, 4.0, (n, 3)) + np.array([lateral * 4.0, 0, 0])
        radii = size * rng.uniform(3.5, 5.5, n)
        trees.append(grow_tree(rng, starts, dirs, radii, in_lung, r_min=0.9 * size))

        lo = np.array([lung["cx"] - lung["ax"], lung["cy"] - lung["ay"], anat.z_mid - anat.z_half])
        hi = np.array([lung["cx"] + lung["ax"], lung["cy"] + lung["ay"], anat.z_mid + anat.z_half])
        seeds = rng.uniform(lo, hi, size=(n_sub * 3, 3))
        seeds = seeds[in_lung(seeds)][:n_sub]
        away = seeds - hilum[None, :]
        away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6)
        dirs = away + rng.normal(0.0, 0.3, away.shape)
        radii = size * rng.uniform(1.0, 2.6, len(seeds))
        trees.append(grow_tree(rng, seeds, dirs, radii, in_lung, r_min=0.9 * size))
    return np.concatenate(trees)
