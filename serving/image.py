"""The one image type that every reader, writer and preprocessing step passes around.

Axis order: `array` is indexed `[z, y, x]` for volumes (slice, row, column) and `[y, x]` for 2D
images, i.e. numpy C order with the slowest-varying axis first. `spacing` follows the same order.

Channels: a grey image (`channels == 1`, the default) has no channel axis. A colour or multi-channel
image (RGB photograph, RGBA, a microscope's stains) has `channels > 1` and one trailing channel
axis: `array` is `(y, x, C)` or `(z, y, x, C)`. So an RGB PNG is `(H, W, 3)` with `channels=3` and
2D geometry, never a volume of 3 slices. Geometry is spatial only: `shape`, `ndim`, `spacing`,
`origin` and `direction` describe the grid without the channel axis, so
`array.shape == shape + (channels,)` when `channels > 1`. A step that needs a grey image calls
`require_grey`, which refuses a multi-channel one with a `DataError`.

Unknown spacing: formats that may not record voxel size (`.npy`, PNG, JPEG, TIFF without
resolution tags) get 1.0 on the axes they cannot tell, and the reader lists those axes in
`metadata["spacing_assumed_axes"]` (with `metadata["spacing_source"] == "assumed"` when none is
known). `assumed_spacing_axes` reads it; `serving.preprocessing.preprocess` refuses to resample
such an axis to a target spacing rather than treat 1.0 as millimetres.

Geometry is in DICOM patient coordinates (LPS, millimetres): the physical position of the centre of
voxel `index` (in array order) is `origin + direction @ (index * spacing)`, where column `a` of
`direction` is the unit vector of array axis `a`. For a plain axial CT, `direction` is
`[[0, 0, 1], [0, 1, 0], [1, 0, 0]]`: axis 0 (z) runs along +S, axis 1 (rows) along +P, axis 2
(columns) along +L.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from serving.deid import PROFILE_KEYWORDS, check_metadata
from serving.errors import DataError

# Attributes that may identify a patient: those the DICOM PS3.15 Basic Application Level
# Confidentiality Profile removes or replaces (`serving.deid.PROFILE`). `Image` refuses them in
# `metadata` unless `metadata["phi_allowed"]` lists them (a reader's `allow=` argument).
PHI_KEYS = PROFILE_KEYWORDS


def axial_direction(ndim: int = 3) -> np.ndarray:
    """Direction cosines of an axial image in array order (see module docstring)."""
    if ndim == 2:
        return np.array([[0.0, 1.0], [1.0, 0.0]])
    return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclasses.dataclass(frozen=True)
class Image:
    """An array with its physical geometry and non-identifying metadata.

    Args:
        array: voxel values, shape `(z, y, x)` or `(y, x)` for a grey image, `(z, y, x, C)` or
            `(y, x, C)` when `channels = C > 1`. CT values are Hounsfield units.
        spacing: voxel size in mm, one positive value per spatial axis, in array order.
        origin: LPS position (mm) of the centre of the first voxel, one value per spatial axis.
        direction: `(ndim, ndim)` matrix; column `a` is the LPS unit vector of spatial axis `a`.
        modality: e.g. "CT", "MR", "SEG" for label maps.
        metadata: extra non-identifying facts. Keys that are attributes of the DICOM PS3.15 Basic
            Confidentiality Profile (`PHI_KEYS`, see `serving.deid`) are refused unless
            `metadata["phi_allowed"]` lists them (set by a reader's `allow=`). Readers may set
            "spacing_source" ("file", "sidecar", "argument" or "assumed"),
            "spacing_assumed_axes" (see the module docstring) and "color_mode" (e.g. "RGB").
        channels: 1 for a grey image (no channel axis), else the length of the trailing
            channel axis.

    Raises:
        DataError: if the geometry or `channels` does not match the array, or `metadata` holds
            a profile attribute that `metadata["phi_allowed"]` does not list.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    modality: str = "OT"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    channels: int = 1

    def __post_init__(self):
        array = np.asarray(self.array)
        channels = self.channels
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
            raise DataError(
                f"`channels` must be a positive integer (1 = grey). Received: channels={channels!r}"
            )
        channels = int(channels)
        ndim = array.ndim - (channels > 1)
        if channels == 1 and ndim not in (2, 3):
            raise DataError(f"`array` must be 2D (y, x) or 3D (z, y, x). Received: shape={array.shape}")
        if channels > 1 and (ndim not in (2, 3) or array.shape[-1] != channels):
            raise DataError(
                f"`array` must be (y, x, {channels}) or (z, y, x, {channels}) for an image with "
                f"channels={channels}. Received: shape={array.shape}"
            )
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise DataError(
                f"`spacing` must have {ndim} positive values, one per array axis. "
                f"Received: spacing={self.spacing}"
            )
        origin = (0.0,) * ndim if self.origin is None else tuple(float(o) for o in self.origin)
        if len(origin) != ndim:
            raise DataError(f"`origin` must have {ndim} values. Received: origin={self.origin}")
        direction = axial_direction(ndim) if self.direction is None else np.asarray(self.direction, float)
        if direction.shape != (ndim, ndim):
            raise DataError(
                f"`direction` must be a {ndim}x{ndim} matrix. Received: shape={direction.shape}"
            )
        check_metadata(self.metadata)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "channels", channels)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial grid: `array.shape` without the channel axis."""
        return self.array.shape[: self.ndim]

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3), the length of `spacing`."""
        return self.array.ndim - (self.channels > 1)

    @property
    def assumed_spacing_axes(self) -> tuple[int, ...]:
        """Spatial axes whose spacing the reader did not know and set to 1.0 (see module doc)."""
        if self.metadata.get("spacing_source") == "assumed":
            return tuple(range(self.ndim))
        return tuple(int(a) for a in self.metadata.get("spacing_assumed_axes", ()))

    def describe_channels(self) -> str:
        """"a grey image", or e.g. "an RGB image (3 channels)", for messages."""
        if self.channels == 1:
            return "a grey image"
        name = self.metadata.get("color_mode")
        if not isinstance(name, str) or not name:
            return f"a {self.channels}-channel image"
        article = "an" if name[0].upper() in "AEFHILMNORSX" else "a"
        return f"{article} {name} image ({self.channels} channels)"

    def require_grey(self, what: str) -> None:
        """Refuse a multi-channel image in a step that needs one value per voxel.

        Args:
            what: the step and, where known, the file, e.g. "Writing NIfTI `mask.nii.gz`".

        Raises:
            DataError: if `channels > 1`.
        """
        if self.channels > 1:
            raise DataError(
                f"{what} requires a grey image (one value per voxel, no channel axis). "
                f"Received: {self.describe_channels()}, array shape={self.array.shape}"
            )

    def affine(self) -> np.ndarray:
        """4x4 (or 3x3 for 2D) matrix mapping homogeneous array indices to LPS millimetres."""
        n = self.ndim
        affine = np.eye(n + 1)
        affine[:n, :n] = self.direction * np.asarray(self.spacing)[None, :]
        affine[:n, n] = self.origin
        return affine

    def index_to_physical(self, index) -> np.ndarray:
        """LPS position (mm) of array index (or `(N, ndim)` indices), in array order."""
        index = np.asarray(index, float)
        return index * np.asarray(self.spacing) @ self.direction.T + np.asarray(self.origin)

    def physical_to_index(self, point) -> np.ndarray:
        """Fractional array index of an LPS point (or `(N, ndim)` points)."""
        point = np.asarray(point, float) - np.asarray(self.origin)
        return point @ np.linalg.inv(self.direction).T / np.asarray(self.spacing)

    def with_array(self, array: np.ndarray, **changes) -> Image:
        """A copy with a new array (same grid unless geometry is changed too).

        An array of exactly the spatial `shape` (e.g. a mask predicted on an RGB image) makes a
        grey image unless `channels` is given.
        """
        if "channels" not in changes and self.channels > 1 and np.shape(array) == self.shape:
            changes["channels"] = 1
        return dataclasses.replace(self, array=array, **changes)

    def as_volume(self) -> Image:
        """A 2D image as a one-slice volume `(1, y, x[, C])`; a volume unchanged.

        The new axis 0 runs along +S with a nominal 1 mm spacing, and the 2D plane keeps its
        (L, P) direction and origin, so a 2D image goes through the same 3-axis preprocessing,
        cache and slice models as a CT series.
        """
        if self.ndim == 3:
            return self
        d = self.direction
        direction = np.array([[0.0, d[0, 0], d[0, 1]], [0.0, d[1, 0], d[1, 1]], [1.0, 0.0, 0.0]])
        return dataclasses.replace(
            self, array=self.array[None], spacing=(1.0, *self.spacing),
            origin=(*self.origin, 0.0), direction=direction,
        )

    def reoriented(self) -> Image:
        """The same voxels with array axes permuted and flipped to the closest axial order.

        Afterwards axis 0 runs as close as possible to +S, axis 1 to +P and axis 2 to +L (in 2D:
        axis 0 to +P, axis 1 to +L), the order a plain axial DICOM series reads in. No voxel is
        resampled: values move, `spacing` is permuted with its axes, `origin` becomes the LPS
        position of the voxel now first, and an oblique grid stays oblique (its direction is as
        near the identity order as a permutation and flips allow). The channel axis stays last.

        Returns:
            The reoriented image (`self` when nothing changes).
        """
        target = axial_direction(self.ndim)
        # cosine[t, a]: how far array axis a runs along target axis t.
        cosine = target.T @ self.direction
        orders = itertools.permutations(range(self.ndim))
        best = max(orders, key=lambda p: sum(abs(cosine[t, a]) for t, a in enumerate(p)))
        flips = [a for t, a in enumerate(best) if cosine[t, a] < 0]
        if list(best) == list(range(self.ndim)) and not flips:
            return self
        array = np.flip(self.array, axis=flips) if flips else self.array
        axes = list(best) + list(range(self.ndim, self.array.ndim))
        array = np.ascontiguousarray(np.transpose(array, axes))
        first = [self.shape[a] - 1 if a in flips else 0 for a in range(self.ndim)]
        direction = self.direction[:, list(best)] * [(-1.0 if a in flips else 1.0) for a in best]
        metadata = dict(self.metadata)
        if "spacing_assumed_axes" in metadata:
            metadata["spacing_assumed_axes"] = sorted(
                best.index(a) for a in metadata["spacing_assumed_axes"]
            )
        return dataclasses.replace(
            self, array=array, spacing=tuple(self.spacing[a] for a in best),
            origin=tuple(self.index_to_physical(first)), direction=direction, metadata=metadata,
        )

    def same_geometry(self, other: Image, atol: float = 1e-3) -> bool:
        """Whether two images share the spatial grid: shape, spacing, origin and direction.

        Channels are not compared: a grey mask lies on its RGB image's grid.
        """
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

