"""Write a predicted mask of a DICOM series as a DICOM Segmentation (SEG) that references the
source series, so a PACS or viewer shows it over the images it was predicted from.

The mask must lie on the source series' grid: the shape and geometry that `read_image` returns
for the series folder (slices sorted along the normal). Each mask slice is matched to its source
SOP instance by position along the slice normal, never by file name or order, and highdicom
writes every frame with that instance as its source image and that instance's
ImagePositionPatient as its plane position.

Segments: a label map with values 0 (background) and 1..K; each label k > 0 is one segment
(binary masks are the case K = 1). Frames that hold no voxel of a segment are omitted, except in
an all-empty mask, which is written with every frame (a SEG needs at least one).

The SEG copies the patient and study modules of its source, as the standard requires to place it
in the study; nothing of them is logged or put in an error message here.

highdicom is imported on first use so that `serving` imports with numpy alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io.base_dicom import _value, is_multiframe, non_image, pydicom_module, read_dataset
from serving.io.base_writer import atomic_file, label_map
from serving.io.dicom_series import _files
from serving.io.dicom_stack import slice_plane, stack_planes
from serving.lazy_import import lazy_import

_MAX_LABEL_CHARS = 64  # SegmentLabel is a LO (long string)
_TINY = np.zeros((1, 1), np.float32)


def write_dicom_seg(
    mask: Image,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    series_uid: str | None = None,
    algorithm_name: str = "kerasmed",
    algorithm_version: str = "0.1.0",
    series_description: str = "kerasmed segmentation",
    series_number: int = 99,
    segment_types: Sequence[str | tuple[str, str, str]] | None = None,
    segment_categories: Sequence[str | tuple[str, str, str]] | None = None,
) -> Path:
    """Write `mask` as a binary DICOM SEG referencing the DICOM series it was predicted on.

    Args:
        mask: 3D grey label map `(z, rows, cols)` on the source series' grid (as `read_image`
            returns it for `source`): 0 is background, 1..K the classes. bool or whole numbers.
        source: the source series: its folder (as read by `read_image`; other series and
            non-image objects in it are ignored) or a list of its files.
        path: the SEG file to write (replaced if it exists; written under a temporary name and
            renamed, so it is never seen half-written).
        class_names: segment labels for classes 1..K (at most 64 characters each; one string for
            a binary mask); K is their number. Default: K = the largest label (at least 1),
            named "class 1", "class 2"...
        series_uid: the SeriesInstanceUID to reference when `source` holds several series.
        algorithm_name: AlgorithmName of every segment, and the ManufacturerModelName.
        algorithm_version: AlgorithmVersion, and the SoftwareVersions.
        series_description: SeriesDescription of the SEG series.
        series_number: SeriesNumber of the SEG series.
        segment_types: the SegmentedPropertyType of classes 1..K, what a viewer shows as each
            segment's meaning: a SNOMED CT keyword of pydicom's `codes.SCT` (e.g. "Nodule",
            "Lung", "Liver") or a `(code value, coding scheme, meaning)` triple. Default:
            "Lesion" for every class.
        segment_categories: the SegmentedPropertyCategory of classes 1..K, the same way.
            Default: "MorphologicallyAbnormalStructure" (use e.g. "Organ" or "Tissue" for
            anatomy).

    Returns:
        The written path.

    Raises:
        DataError: if `mask` is not a 3D grey label map of whole numbers >= 0, holds a label
            above K, is not on the source series' grid (naming both shapes), or the source is
            not a series of single-frame slices with plane geometry on a uniform grid (a file is
            missing or unreadable, several series and no `series_uid`, multi-frame files,
            uneven gaps...).
        ConfigError: if `segment_types` or `segment_categories` does not hold one entry per
            class, or names a keyword pydicom's SNOMED CT codes do not have.
        DependencyError: if highdicom is not installed.

    Example:
        >>> ct = read_image("patient01/ct")
        >>> nodules = ct.with_array((probabilities > 0.5).astype(np.uint8), modality="SEG")
        >>> write_dicom_seg(nodules, "patient01/ct", "out/nodules_seg.dcm", class_names=["nodule"])
    """
    hd = lazy_import("highdicom", purpose="write DICOM SEG files")
    pydicom_module()
    from pydicom.sr.codedict import codes

    labels, names = _label_map(mask, class_names)
    types = _codes(segment_types, "Lesion", len(names), "segment_types")
    categories = _codes(segment_categories, "MorphologicallyAbnormalStructure", len(names),
                        "segment_categories")
    where = _describe_source(source)
    datasets = _series_datasets(_source_paths(source), series_uid, where)
    ordered = _match_slices(mask, datasets, where)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, (name, kind, category) in enumerate(zip(names, types, categories), start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="kerasmed",
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description=series_description,
        # All frames of an empty mask: a SEG needs at least one frame.
        omit_empty_frames=bool(labels.any()),
    )
    path = Path(path)
    with atomic_file(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


def _label_map(mask: Image, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """The mask as a uint8/uint16 label map, and the K segment names."""
    array = label_map(mask, "Writing a DICOM SEG")
    if mask.ndim != 3:
        raise DataError(
            f"`mask` must be 3D (z, rows, cols) to be written as a DICOM SEG of a series. "
            f"Received: shape={mask.shape}"
        )
    highest = int(array.max()) if array.size else 0
    if class_names is None:
        names = [f"class {k}" for k in range(1, max(highest, 1) + 1)]
    else:
        names = [class_names] if isinstance(class_names, str) else [str(n) for n in class_names]
        bad = [n for n in names if not n.strip() or len(n) > _MAX_LABEL_CHARS]
        if not names or bad:
            raise DataError(
                f"`class_names` must name each class 1..K with 1 to {_MAX_LABEL_CHARS} characters. "
                f"Received: class_names={list(class_names)!r}"
            )
        if highest > len(names):
            raise DataError(
                f"`mask` labels must be at most the number of `class_names` ({len(names)}). "
                f"Received: max label {highest}"
            )
    dtype = np.uint8 if len(names) < 256 else np.uint16
    return array.astype(dtype), names


def _describe_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"`{source}`"
    return f"the {len(source)} files of `source`"


def _source_paths(source) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(
                "`source` must be the source series' folder or a list of its files. "
                f"Received: source={str(source)!r}"
            )
        paths = _files(folder)
    else:
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"Every file in `source` must exist. Received: {len(missing)} missing, e.g. "
                f"{missing[0]!r}"
            )
    if not paths:
        raise DataError(f"`source` must hold the source series' DICOM files. Received: {source!r} (empty)")
    return paths


def _series_datasets(paths: list[Path], series_uid: str | None, where: str) -> list[tuple[Path, object]]:
    """`(path, dataset)` of each slice of the chosen image series (non-image objects skipped)."""
    by_series: dict[str, list] = {}
    for path in paths:
        ds = read_dataset(path, what="Every file of a SEG's source series")
        if non_image(ds, path, what="Every file of a SEG's source series"):
            continue
        by_series.setdefault(str(_value(ds, "SeriesInstanceUID", path)), []).append((path, ds))
    if not by_series:
        raise DataError(f"The SEG's source {where} must hold a DICOM image series. Received: none")
    if series_uid is None and len(by_series) > 1:
        listing = ", ".join(f"{uid} ({len(files)} files)" for uid, files in sorted(by_series.items()))
        raise DataError(
            f"The SEG's source {where} holds {len(by_series)} series; pass `series_uid` to choose "
            f"one of: {listing}. Received: series_uid=None"
        )
    chosen = series_uid if series_uid is not None else next(iter(by_series))
    if chosen not in by_series:
        raise DataError(
            f"`series_uid` must be one of the series in {where}: {sorted(by_series)}. "
            f"Received: series_uid={series_uid!r}"
        )
    files = by_series[chosen]
    multi = [path for path, ds in files if is_multiframe(ds, path)]
    if multi:
        raise DataError(
            f"A SEG's source series must be single-frame slices (multi-frame sources are not "
            f"supported); `{multi[0]}` is multi-frame. Received: {len(multi)} multi-frame files"
        )
    return files


def _match_slices(mask: Image, files: list, where: str) -> list:
    """The source datasets in mask-slice order, each found by its position along the normal.

    The grid is computed by the series reader's own rules (`stack_planes`), so a mask read from
    the series with `read_image` is accepted exactly when it is on that grid.
    """
    rows, cols = mask.shape[1:]
    planes = []
    for path, ds in files:
        plane = slice_plane(ds, path, path.name)
        if plane.size != (rows, cols):
            raise DataError(
                f"`mask` must be on the grid of its source series {where}; `{path}` is "
                f"{plane.size[0]}x{plane.size[1]} pixels. Received: mask shape={mask.shape}"
            )
        # Only the geometry is needed here: stack tiny planes instead of decoding the pixels.
        planes.append(dataclasses.replace(plane, size=(1, 1), values=lambda: _TINY))
    try:
        _, spacing, origin, direction, _ = stack_planes(planes, where, notes=[])
    except DataError as err:
        raise DataError(
            f"A SEG's source series must form one uniform grid of slices, as `read_image` reads "
            f"it without resampling. {err}"
        ) from err
    source_shape = (len(planes), rows, cols)
    grid = Image(np.broadcast_to(np.uint8(0), source_shape), spacing, origin, direction)
    if not mask.same_geometry(grid):
        raise DataError(
            f"`mask` must be on the grid of its source series {where} (shape, spacing, origin "
            f"and direction as `read_image` returns them). Received: mask shape={mask.shape}, "
            f"spacing={_round(mask.spacing)}, origin={_round(mask.origin)}; source shape="
            f"{source_shape}, spacing={_round(spacing)}, origin={_round(origin)}"
        )
    normal = np.asarray(direction)[:, 0]
    along = np.array([p.position @ normal for p in planes])
    corners = np.zeros((len(planes), 3))
    corners[:, 0] = np.arange(len(planes))
    wanted = mask.index_to_physical(corners) @ normal
    nearest = np.abs(along[None, :] - wanted[:, None]).argmin(axis=1)
    misplaced = np.abs(along[nearest] - wanted) > 0.25 * spacing[0]
    if misplaced.any() or len(set(nearest.tolist())) != len(planes):
        raise DataError(
            f"Every slice of `mask` must fall on one slice of its source series {where}. "
            f"Received: {int(misplaced.sum())} slices between source slices"
        )
    return [files[i][1] for i in nearest]


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def _codes(entries, default: str, count: int, argument: str) -> list:
    """One pydicom `Code` per class from SNOMED CT keywords or `(value, scheme, meaning)`."""
    import difflib

    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if entries is None:
        entries = [default] * count
    if isinstance(entries, (str, tuple)):
        entries = [entries]
    if len(entries) != count:
        raise ConfigError(
            f"`{argument}` must hold one entry per class ({count}). Received: {list(entries)}"
        )
    found = []
    for entry in entries:
        if isinstance(entry, tuple) and len(entry) == 3 and all(isinstance(e, str) and e for e in entry):
            found.append(Code(value=entry[0], scheme_designator=entry[1], meaning=entry[2]))
            continue
        if not isinstance(entry, str) or entry not in codes.SCT.dir():
            close = difflib.get_close_matches(str(entry), codes.SCT.dir(), n=5) if isinstance(
                entry, str) else []
            raise ConfigError(
                f"`{argument}` entries must be SNOMED CT keywords of pydicom's `codes.SCT` "
                f"(e.g. 'Nodule', 'Lung'; close to yours: {close}) or (code value, coding scheme, "
                f"meaning) triples. Received: {entry!r}"
            )
        found.append(getattr(codes.SCT, entry))
    return found
