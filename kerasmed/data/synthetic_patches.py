"""A synthetic "nodule" / "no nodule" patch-classification dataset, cut from the chest-CT phantom.

Each phantom (`synthetic_ct.make_case`) gives `patches_per_volume` patches, `patch_size` voxels
square over `context` consecutive axial slices (1: 2D; odd K: 2.5D), half of each class by
default, in a shuffled order:

- **nodule**: a solid nodule of 6 to 15 mm (`NODULE_DIAMETER_MM`, its largest in-plane section as
  a disc) lies within a quarter patch of the centre, wholly inside the patch on every slice, on a
  centre slice where its section is at least half its largest.
- **no_nodule**: the patch holds no voxel of any nodule or of its rim. Its anchor, a lung voxel
  placed as a nodule would be, is a vessel section (`NEGATIVE_MIX`: 40%; one in-plane blob of 12+
  voxels, each blob as likely, so that peripheral vessels count as much as hilar trunks), the
  pleura (the lung's in-plane edge: chest wall or mediastinum, 30%) or any lung voxel (30%).

A vessel cut across is a round soft-tissue blob like a nodule, and a pleural patch is half chest
wall: the classes differ in shape across slices, hardly in intensities (defaults, seed 0: a
histogram's validation AUC 0.60, a small CNN's 0.99). Larger and ground-glass nodules, which a
histogram finds (AUC 0.82 with both, up to 30 mm), and those under 6 mm, which need no follow-up,
are in no patch by default. About half of the phantoms hold no nodule to centre on: skipped.

Patches of one phantom share its `patient_id` and split: no phantom is in two splits. Phantom `v`
is the `v`-th one kept of the seeds `generate.case_seed(seed, i)`, i = 0, 1, ...

Layouts under `root`:

- `format="nifti"`: `images/<case_id>.nii.gz`, int16 `(K, H, W)` HU patches (whole HU, as CT is
  stored) with their spacing and LPS origin, and `manifest.csv` (`MANIFEST_COLUMNS`, paths relative
  to `root`; the nodule centre `(nodule_y, nodule_x)` and radius are in the patch's pixels on the
  centre slice, empty for negatives). Read with `data.columns.mask: null`, `data.columns.label:
  label`.
- `format="png"`: an ImageFolder tree `nodule/*.png`, `no_nodule/*.png` of 16-bit grey PNGs of the
  centre slice holding `HU + PNG_OFFSET` (1024) clipped to [0, 65535]: a model reading them uses
  `hu_window` `PNG_HU_WINDOW` = (24, 1424), i.e. (-1000, 400) HU. PNG records no spacing.
  `nodules.csv` (`NODULE_COLUMNS`) names each patch by its path relative to `root`, as kerasmed's
  ImageFolder discovery does, with the phantom split (discovery draws its own, per case).

Both write `dataset.json` (parameters, counts per class and per anchor) and the `.kerasmed` marker
into a temporary sibling folder renamed to `root` when complete; a finished dataset with the same
parameters is reused. One seed gives the same patches in both formats.

Example:
    >>> root = generate_patch_dataset("data/nodule_patches", seed=0)
    >>> pandas.read_csv(root / "manifest.csv").label.value_counts()   # 1536 of each
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image as PILImage
from scipy import ndimage
from tqdm import tqdm

from kerasmed.data.generate import OVERWRITE_FLAG, case_seed, split_counts
from kerasmed.data.synthetic_ct import GENERATOR_VERSION, SyntheticCase, make_case
from kerasmed.data.synthetic_nodules import KINDS
from serving.atomic import atomic_dir
from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import write_nifti
from serving.ownership import DATASET, check_output_folder, write_marker

FORMAT_VERSION = 1
POSITIVE, NEGATIVE = "nodule", "no_nodule"
CLASS_NAMES = (NEGATIVE, POSITIVE)  # as ImageFolder sorts the class folders: "nodule" is 1
MANIFEST_COLUMNS = ["case_id", "image_path", "label", "split", "patient_id",
                    "nodule_y", "nodule_x", "nodule_radius_px"]
NODULE_COLUMNS = ["case_id", "patient_id", "split", "nodule_y", "nodule_x", "nodule_radius_px"]
FORMATS = ("nifti", "png")
SPLITS = ("train", "val", "test")
PNG_OFFSET = 1024
PNG_HU_WINDOW = (-1000 + PNG_OFFSET, 400 + PNG_OFFSET)
NODULE_DIAMETER_MM = (6.0, 15.0)
NODULE_KINDS = ("solid",)
NEGATIVE_MIX = (("vessel", 0.4), ("pleura", 0.3), ("parenchyma", 0.3))
MAX_SHIFT = 0.25  # of the patch size: how far the nodule (or anchor) may lie from the centre
_MARGIN = 2  # voxels between a positive's nodule and the patch border
_VESSEL_HU = -400.0  # above this inside the lung (nodules aside): a vessel
_MIN_VESSEL_AREA = 12  # voxels of an in-plane vessel blob used as an anchor (~5 mm across)
_HALO = (1, 3, 3)  # (z, y, x) voxels around a nodule that a negative also keeps out of
_TRIES = 400  # placements tried per patch
_MAX_SKIPS = 20  # volumes skipped per volume kept before giving up


@dataclasses.dataclass(frozen=True)
class Patch:
    """One patch cut from a phantom volume.

    Attributes:
        array: int16 HU, `(K, P, P)`.
        label: `POSITIVE` or `NEGATIVE`.
        anchor: "nodule", or the negative's kind (a `NEGATIVE_MIX` name).
        corner: `(z0, y0, x0)`: the volume voxel at the patch's first voxel.
        nodule_yx: a positive's nodule centre, patch pixels `(y, x)`: the centroid of its section
            on the centre slice (or its pixel nearest to that, if outside); None for negatives.
        nodule_radius_px: the radius of a disc of that section's area; None for negatives.
    """

    array: np.ndarray
    label: str
    anchor: str
    corner: tuple[int, int, int]
    nodule_yx: tuple[float, float] | None = None
    nodule_radius_px: float | None = None


def volume_patches(
    case: SyntheticCase,
    rng: np.random.Generator,
    num_patches: int,
    patch_size: int = 64,
    context: int = 3,
    positive_fraction: float = 0.5,
    nodule_diameter_mm: tuple[float, float] = NODULE_DIAMETER_MM,
    nodule_kinds: tuple[str, ...] = NODULE_KINDS,
) -> list[Patch] | None:
    """Cut the patches of one phantom volume (see the module docstring for the rules).

    Args:
        case: the phantom.
        rng: the only source of randomness.
        num_patches: patches to cut; `round(num_patches * positive_fraction)` are positives.
        patch_size: in-plane size P in voxels.
        context: K consecutive slices (odd).
        positive_fraction: share of positives.
        nodule_diameter_mm: `(min, max)` diameter of a positive's nodule (its largest in-plane
            section, as a disc).
        nodule_kinds: the kinds of nodule (`synthetic_nodules.KINDS`) a positive may show.

    Returns:
        The patches in a random order, no two at the same place; None if the volume has no
        nodule of that size to centre a positive on, or too little nodule-free lung.
    """
    ct = case.ct.array
    nodules = case.nodule_mask.array.astype(bool)
    half = context // 2
    n_pos = int(np.floor(num_patches * positive_fraction + 0.5))
    used: set[tuple[int, int, int]] = set()
    positives = _positives(case, nodules, rng, n_pos, patch_size, half, nodule_diameter_mm,
                           nodule_kinds, used)
    if positives is None:
        return None
    halo = _halo(nodules)
    negatives = _negatives(ct, case.lung_mask.array.astype(bool), halo, rng, num_patches - n_pos,
                           patch_size, half, used)
    if negatives is None:
        return None
    patches = positives + negatives
    return [patches[i] for i in rng.permutation(len(patches))]


def _draw_corner(rng, centre: float, size: int, n: int, extent=None) -> int | None:
    """A random patch start along an axis of `n` voxels that keeps the patch inside, `centre`
    within `MAX_SHIFT * size` of the patch's centre and the voxels `extent = (first, last)`
    `_MARGIN` inside its border; None if there is none."""
    shift = MAX_SHIFT * size
    lo, hi = centre - (size - 1) / 2 - shift, centre - (size - 1) / 2 + shift
    if extent is not None:
        lo, hi = max(lo, extent[1] + _MARGIN - size + 1), min(hi, extent[0] - _MARGIN)
    lo, hi = max(int(np.ceil(lo)), 0), min(int(np.floor(hi)), n - size)
    return int(rng.integers(lo, hi + 1)) if lo <= hi else None


def _box(corner, size: int, half: int) -> tuple[slice, slice, slice]:
    z0, y0, x0 = corner
    return slice(z0, z0 + 2 * half + 1), slice(y0, y0 + size), slice(x0, x0 + size)


def _nodule_kinds(case: SyntheticCase, labels: np.ndarray) -> list[str]:
    """The kind of each labelled nodule: that of the listed nodule centred nearest to it."""
    ct = case.ct
    centres = np.array([[n["center_x_mm"], n["center_y_mm"], n["center_z_mm"]] for n in case.nodules])
    kinds = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        voxel = np.argwhere(labels[box] == index).mean(axis=0) + [b.start for b in box]
        lps = np.asarray(ct.origin) + ct.direction @ (voxel * ct.spacing)
        kinds.append(case.nodules[int(np.argmin(np.linalg.norm(centres - lps, axis=1)))]["kind"])
    return kinds


def _positives(case, nodules, rng, count, size, half, diameter_mm, kinds, used):
    ct = case.ct.array
    nz, ny, nx = ct.shape
    if count == 0:
        return []
    labels, _ = ndimage.label(nodules)
    pixel_area = float(case.ct.spacing[1] * case.ct.spacing[2])
    targets = []  # (the nodule's mask, its candidate centre slices)
    for index, (box, kind) in enumerate(zip(ndimage.find_objects(labels),
                                            _nodule_kinds(case, labels)), start=1):
        areas = (labels[box] == index).sum(axis=(1, 2))
        diameter = 2.0 * np.sqrt(areas.max() * pixel_area / np.pi)
        zs = box[0].start + np.flatnonzero(areas >= 0.5 * areas.max())
        zs = zs[(zs >= half) & (zs < nz - half)]
        if diameter_mm[0] <= diameter <= diameter_mm[1] and kind in kinds and len(zs):
            targets.append((labels == index, zs))
    if not targets:
        return None
    found = []
    for _ in range(count * _TRIES):
        if len(found) == count:
            break
        own, zs = targets[int(rng.integers(len(targets)))]
        z = int(zs[int(rng.integers(len(zs)))])
        ys, xs = np.nonzero(own[z - half : z + half + 1].any(axis=0))  # on every slice
        cy, cx = np.argwhere(own[z]).mean(axis=0)
        y0 = _draw_corner(rng, cy, size, ny, (ys.min(), ys.max()))
        x0 = None if y0 is None else _draw_corner(rng, cx, size, nx, (xs.min(), xs.max()))
        corner = (z - half, y0, x0)
        if x0 is None or corner in used:
            continue
        box = _box(corner, size, half)
        if nodules[box][:, [0, -1]].any() or nodules[box][:, :, [0, -1]].any():
            continue  # another nodule cut by the border
        used.add(corner)
        section = own[z, box[1], box[2]]
        found.append(Patch(_hu16(ct[box]), POSITIVE, "nodule", corner, _inside_point(section),
                           round(float(np.sqrt(section.sum() / np.pi)), 2)))
    return found if len(found) == count else None


def _inside_point(section: np.ndarray) -> tuple[float, float]:
    """The section's centroid, or its pixel nearest to it when the centroid falls outside."""
    points = np.argwhere(section)
    c = points.mean(axis=0)
    if not section[tuple(np.round(c).astype(int))]:
        c = points[np.argmin(((points - c) ** 2).sum(axis=1))].astype(float)
    return round(float(c[0]), 2), round(float(c[1]), 2)


def _anchor_sets(ct, lung, halo, half):
    """Per negative kind: anchor voxels `(n, 3)` and their weights (None: uniform), on slices
    with K full slices around them, outside every nodule's halo."""
    nz = ct.shape[0]
    free = lung & ~halo
    free[:half] = free[nz - half :] = False
    in_plane = np.pad(np.ones((1, 3, 3), bool), ((1, 1), (0, 0), (0, 0)))  # 8-connected per slice
    labels, count = ndimage.label(free & (ct > _VESSEL_HU), structure=in_plane)
    points = np.argwhere(labels)
    blob = labels[tuple(points.T)]
    sizes = np.bincount(blob, minlength=count + 1)
    keep = sizes[blob] >= _MIN_VESSEL_AREA
    inner = lung.copy()  # the lung minus its in-plane edge (4-neighbourhood; the lungs never
    for axis in (1, 2):  # reach the volume's border, so `roll` wraps nothing)
        inner &= np.roll(lung, 1, axis) & np.roll(lung, -1, axis)
    return {"vessel": (points[keep], 1.0 / sizes[blob[keep]]),
            "pleura": (np.argwhere(free & ~inner), None),
            "parenchyma": (np.argwhere(free), None)}


def _negatives(ct, lung, halo, rng, count, size, half, used):
    anchors = _anchor_sets(ct, lung, halo, half)
    names = [name for name, _ in NEGATIVE_MIX]
    shares = np.array([share for _, share in NEGATIVE_MIX])
    found = []
    for i in rng.choice(len(names), size=count, p=shares / shares.sum()):
        points, weights = anchors[names[i]] if len(anchors[names[i]][0]) else anchors["parenchyma"]
        corner = _negative_corner(points, weights, halo, rng, size, half, used)
        if corner is None:
            return None
        used.add(corner)
        found.append(Patch(_hu16(ct[_box(corner, size, half)]), NEGATIVE, names[i], corner))
    return found


def _negative_corner(points, weights, halo, rng, size, half, used):
    """A random patch corner around an anchor (drawn by `weights`, else uniformly) whose patch
    holds no halo voxel; None if `_TRIES` draws find none."""
    if not len(points):
        return None
    cumulative = None if weights is None else np.cumsum(weights)
    _, ny, nx = halo.shape
    for _ in range(_TRIES):
        if cumulative is None:
            z, ay, ax = points[int(rng.integers(len(points)))]
        else:
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            z, ay, ax = points[min(pick, len(points) - 1)]
        y0 = _draw_corner(rng, ay, size, ny)
        x0 = None if y0 is None else _draw_corner(rng, ax, size, nx)
        corner = (int(z) - half, y0, x0)
        if x0 is not None and corner not in used and not halo[_box(corner, size, half)].any():
            return corner
    return None


def _halo(nodules: np.ndarray) -> np.ndarray:
    """The nodules grown by `_HALO` voxels per axis (a box), computed around each nodule only."""
    halo = np.zeros_like(nodules)
    labels, _ = ndimage.label(nodules)
    for box in ndimage.find_objects(labels):
        grown = tuple(slice(max(b.start - h, 0), b.stop + h) for b, h in zip(box, _HALO))
        halo[grown] |= ndimage.maximum_filter(nodules[grown], size=[2 * h + 1 for h in _HALO],
                                              mode="constant")
    return halo


def _hu16(block: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(block), -32768, 32767).astype(np.int16)


def _checked_params(a: dict) -> dict:
    """The parameters `dataset.json` records: `generate_patch_dataset`'s arguments, checked.

    Raises:
        ConfigError: naming the first invalid argument.
    """

    def whole(name, low, value=None):
        value = a[name] if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
        return int(value)

    if len(tuple(a["shape"])) != 3:
        raise ConfigError(f"`shape` must be 3 sizes (z, y, x). Received: shape={a['shape']}")
    kinds = [a["nodule_kinds"]] if isinstance(a["nodule_kinds"], str) else list(a["nodule_kinds"])
    p = dict(format_version=FORMAT_VERSION, generator="kerasmed.data.synthetic_patches",
             generator_version=GENERATOR_VERSION, num_volumes=whole("num_volumes", 2),
             patches_per_volume=whole("patches_per_volume", 1), patch_size=whole("patch_size", 16),
             context=whole("context", 1), seed=whole("seed", 0),
             split_fractions=[float(f) for f in a["split_fractions"]], format=a["format"],
             shape=[whole("shape", 8, n) for n in a["shape"]],
             positive_fraction=float(a["positive_fraction"]),
             nodule_diameter_mm=[float(d) for d in a["nodule_diameter_mm"]],
             nodule_kinds=sorted(set(kinds)))
    split_counts(p["num_volumes"], p["split_fractions"])
    if p["patch_size"] > min(p["shape"][1:]):
        raise ConfigError(f"`patch_size` must fit in a slice of `shape` {tuple(p['shape'])}. "
                          f"Received: patch_size={p['patch_size']}")
    if p["context"] % 2 == 0 or p["context"] > p["shape"][0]:
        raise ConfigError("`context` must be odd (1 for 2D) and at most shape[0] = "
                          f"{p['shape'][0]}. Received: context={p['context']}")
    if p["format"] not in FORMATS:
        raise ConfigError(f"Unknown `format`; valid formats: {list(FORMATS)}. Received: {p['format']!r}")
    if not 0.0 <= p["positive_fraction"] <= 1.0:
        raise ConfigError("`positive_fraction` must be in [0, 1]. "
                          f"Received: positive_fraction={a['positive_fraction']}")
    if not (len(d := p["nodule_diameter_mm"]) == 2 and 0.0 < d[0] <= d[1]):
        raise ConfigError("`nodule_diameter_mm` must be (min, max) with 0 < min <= max. "
                          f"Received: nodule_diameter_mm={a['nodule_diameter_mm']}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"`nodule_kinds` must list some of {list(KINDS)}. "
                          f"Received: nodule_kinds={a['nodule_kinds']!r}")
    return p


def generate_patch_dataset(
    root: str | os.PathLike,
    num_volumes: int = 64,
    patches_per_volume: int = 48,
    patch_size: int = 64,
    context: int = 3,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    format: str = "nifti",
    shape: tuple[int, int, int] = (32, 256, 256),
    progress: bool = True,
    positive_fraction: float = 0.5,
    nodule_diameter_mm: tuple[float, float] = NODULE_DIAMETER_MM,
    nodule_kinds: tuple[str, ...] = NODULE_KINDS,
    overwrite: bool = False,
    created_by: str = "kerasmed.data.synthetic_patches",
) -> Path:
    """Generate (or reuse) a nodule / no-nodule patch dataset; see the module docstring.

    Args:
        root: dataset folder to create.
        num_volumes: phantom volumes (patients); at least one train and one val.
        patches_per_volume: patches cut from each volume.
        patch_size: in-plane patch size in voxels (at least 16).
        context: consecutive axial slices per patch: 1 (2D) or odd K (2.5D). PNGs keep the
            centre slice, and K decides only which slices may be centres.
        seed: dataset seed: the same seed (and arguments) gives identical files.
        split_fractions: (train, val, test) shares of the volumes (`generate.split_counts`).
        format: "nifti" (manifest + `.nii.gz` patches) or "png" (ImageFolder tree).
        shape: phantom volume shape `(z, y, x)`; (32, 256, 256) holds an adult chest.
        progress: show a tqdm progress bar over the volumes.
        positive_fraction: share of "nodule" patches in each volume.
        nodule_diameter_mm: `(min, max)` size of a positive's nodule.
        nodule_kinds: the kinds a positive's nodule may be: "solid", "ground_glass".
        overwrite: replace an existing `root` that holds something else.
        created_by: recorded in the folder's `.kerasmed` marker.

    Returns:
        `root` (the folder to give as `data.root`).

    Raises:
        ConfigError: if an argument is invalid, or the phantoms of that `shape` hold no nodule of
            `nodule_diameter_mm` to centre a patch on.
        DataError: if `root` is a file or not writable, or holds something else and `overwrite`
            is False (nothing is deleted before these checks).
    """
    params = _checked_params(locals())
    root = Path(root)
    if is_complete_patch_dataset(root, params):
        return root
    check_output_folder(
        root, "Dataset folder `root`", DATASET, OVERWRITE_FLAG, overwrite=overwrite,
        owned=lambda marker: False, error=DataError,
        rule=f"absent, empty or a finished patch dataset made with parameters {params}",
    )
    counts = split_counts(params["num_volumes"], params["split_fractions"])
    order = np.random.default_rng([params["seed"], 1]).permutation(params["num_volumes"])
    split_of = np.empty(params["num_volumes"], object)
    split_of[order] = np.repeat(SPLITS, [counts[s] for s in SPLITS])
    with atomic_dir(root) as tmp:
        write_marker(tmp, DATASET, created_by)
        rows, seeds = _write_volumes(tmp, params, split_of, progress)
        table = pd.DataFrame(rows)
        if format == "nifti":
            table[MANIFEST_COLUMNS].to_csv(tmp / "manifest.csv", index=False)
        else:
            table[NODULE_COLUMNS].to_csv(tmp / "nodules.csv", index=False)
        png = {"png_offset": PNG_OFFSET, "hu_window": list(PNG_HU_WINDOW)} if format == "png" else {}
        info = {**params, "split_counts": counts, "volume_seeds": seeds, **png,
                "class_counts": table["label"].value_counts().sort_index().to_dict(),
                "anchor_counts": table["anchor"].value_counts().sort_index().to_dict(),
                "complete": True}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


def _draw_volume(params: dict, index: int):
    """Phantom `index` of the seed sequence: its seed, CT geometry and patches (None: skipped)."""
    volume_seed = case_seed(params["seed"], index)
    case = make_case(volume_seed, shape=tuple(params["shape"]))
    patches = volume_patches(
        case, np.random.default_rng([params["seed"], index, 2]), params["patches_per_volume"],
        params["patch_size"], params["context"], params["positive_fraction"],
        tuple(params["nodule_diameter_mm"]), tuple(params["nodule_kinds"]))
    ct = case.ct
    return volume_seed, dict(spacing=ct.spacing, origin=ct.origin, direction=ct.direction), patches


def _write_volumes(tmp: Path, params: dict, split_of: np.ndarray, progress: bool):
    """Keep the phantoms that give their patches, in seed order, and write their patches."""
    rows, seeds, index = [], [], 0
    with tqdm(total=params["num_volumes"], desc="nodule patch volumes", unit="volume",
              disable=not progress) as bar:
        while len(seeds) < params["num_volumes"]:
            if index >= _MAX_SKIPS * (len(seeds) + 1):
                raise ConfigError(
                    f"Phantoms of `shape` {tuple(params['shape'])} must hold a nodule of "
                    f"`nodule_diameter_mm` {tuple(params['nodule_diameter_mm'])} and `nodule_kinds` "
                    f"{params['nodule_kinds']} that a {params['patch_size']}-voxel patch centres, "
                    f"and room for negatives. Received: {index - len(seeds)} of {index} without")
            volume_seed, geometry, patches = _draw_volume(params, index)
            index += 1
            if patches is None:
                continue
            seeds.append(volume_seed)
            volume = len(seeds) - 1
            rows += [_write_patch(tmp, params, geometry, patch, volume, number, split_of[volume])
                     for number, patch in enumerate(patches)]
            bar.update(1)
    return rows, seeds


def _write_patch(tmp: Path, params: dict, geometry: dict, patch: Patch, volume: int, number: int,
                 split: str) -> dict:
    patient = f"phantom_{volume:03d}"
    name = f"{patient}_patch_{number:03d}"
    y, x = patch.nodule_yx if patch.nodule_yx is not None else (None, None)
    row = {"label": patch.label, "anchor": patch.anchor, "split": split, "patient_id": patient,
           "nodule_y": y, "nodule_x": x, "nodule_radius_px": patch.nodule_radius_px}
    if params["format"] == "nifti":
        rel = Path("images") / f"{name}.nii.gz"
        offset = geometry["direction"] @ (np.asarray(patch.corner) * geometry["spacing"])
        write_nifti(Image(patch.array, **{**geometry, "origin": tuple(geometry["origin"] + offset)},
                          modality="CT"), tmp / rel)
        return {**row, "case_id": name, "image_path": rel.as_posix()}
    rel = Path(patch.label) / f"{name}.png"
    (tmp / rel.parent).mkdir(exist_ok=True)
    centre = patch.array[patch.array.shape[0] // 2].astype(np.int32) + PNG_OFFSET
    PILImage.fromarray(np.clip(centre, 0, 65535).astype(np.uint16)).save(tmp / rel)
    return {**row, "case_id": rel.as_posix(), "image_path": rel.as_posix()}


def is_complete_patch_dataset(root: str | os.PathLike, params: dict) -> bool:
    """Whether `root` is a finished patch dataset made with exactly `params` (all files there)."""
    root = Path(root)
    try:
        info = json.loads((root / "dataset.json").read_text())
        table = pd.read_csv(root / ("manifest.csv" if params["format"] == "nifti" else "nodules.csv"),
                            dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return False
    if not info.get("complete") or any(info.get(k) != v for k, v in params.items()):
        return False
    expected = params["num_volumes"] * params["patches_per_volume"]
    column = "image_path" if params["format"] == "nifti" else "case_id"
    return len(table) == expected and all((root / p).is_file() for p in table[column])
