"""The one image type that every reader, writer and preprocessing step passes around.

Axis order: `array` is indexed `[z, y, x]` for volumes (slice, row, column) and `[y, x]` for 2D
images, i.e. numpy C order with the slowest-varying axis first. `spacing` follows the same order.

Geometry is in DICOM patient coordinates (LPS, millimetres): the physical position of the centre of
voxel `index` (in array order) is `origin + direction @ (index * spacing)`, where column `a` of
`direction` is the unit vector of array axis `a`. For a plain axial CT, `direction` is
`[[0, 0, 1], [0, 1, 0], [1, 0, 0]]`: axis 0 (z) runs along +S, axis 1 (rows) along +P, axis 2
(columns) along +L.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from serving.errors import DataError

# Tags that may identify a patient. Readers never copy them into `metadata`; this list is also
# the check used by tests and writers.
PHI_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientMotherBirthName",
        "ReferringPhysicianName",
        "InstitutionName",
        "InstitutionAddress",
        "AccessionNumber",
        "StudyID",
    }
)


def axial_direction(ndim: int = 3) -> np.ndarray:
    """Direction cosines of an axial image in array order (see module docstring)."""
    if ndim == 2:
        return np.array([[0.0, 1.0], [1.0, 0.0]])
    return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclasses.dataclass(frozen=True)
class Image:
    """An array with its physical geometry and non-identifying metadata.

    Args:
        array: voxel values, shape `(z, y, x)` or `(y, x)`. CT values are Hounsfield units.
        spacing: voxel size in mm, one positive value per array axis, in array order.
        origin: LPS position (mm) of the centre of the first voxel, one value per array axis.
        direction: `(ndim, ndim)` matrix; column `a` is the LPS unit vector of array axis `a`.
        modality: e.g. "CT", "MR", "SEG" for label maps.
        metadata: extra non-identifying facts; never holds keys from `PHI_KEYS`.

    Raises:
        DataError: if the geometry does not match the array.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    modality: str = "OT"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        array = np.asarray(self.array)
        ndim = array.ndim
        if ndim not in (2, 3):
            raise DataError(f"`array` must be 2D (y, x) or 3D (z, y, x). Received: shape={array.shape}")
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
        leaked = PHI_KEYS.intersection(self.metadata)
        if leaked:
            raise DataError(
                f"`metadata` must not hold patient-identifying tags. Received: {sorted(leaked)}"
            )
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def ndim(self) -> int:
        return self.array.ndim

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
        """A copy with a new array (same shape unless geometry is changed too)."""
        return dataclasses.replace(self, array=array, **changes)

    def same_geometry(self, other: Image, atol: float = 1e-3) -> bool:
        """Whether two images share shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )
