"""Segmentation, runtime side: a 2D (or 2.5D) slice model over a volume, a mask on the source grid.

Model contract: input `(N, H, W, K)` float32 raw intensities, K consecutive slices centred on the
predicted one (K from the bundle's input shape); output `(N, H, W, C)` probabilities (C=1 sigmoid
foreground, C>1 softmax classes). The result is the probability map and the label map mapped back
onto the source image's grid. Parity's agreement is the Dice between the two artefacts' masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving.errors import ConfigError
from serving.image import Image
from serving.inference import probs_to_mask, slice_batches
from serving.metrics import mean_dice
from serving.preprocessing import invert, preprocess
from serving.tasks.base_task import Agreement, CaseInputs, RuntimeTask, check_class_names


def _context(bundle) -> int:
    channels = bundle.manifest["input"]["shape"][-1]
    return int(channels) if channels else 1


def foreground_classes(num_classes: int) -> list[int]:
    """Labels scored by Dice: `{1}` for one sigmoid channel, `1..C-1` for C softmax channels."""
    return [1] if num_classes == 1 else list(range(1, num_classes))


class SegmentationAgreement(Agreement):
    """Mean Dice between the artefact's and the reference's masks per case, and whether every
    mask is identical."""

    tolerance_fields: ClassVar[tuple[str, ...]] = ("min_dice_agreement", "identical_masks")

    def __init__(self, bundle):
        super().__init__(bundle)
        self.identical = True

    def add(self, case_id, reference, candidate, truth=None) -> None:
        if candidate.shape != reference.shape:
            self.identical = False
            self.per_case[case_id] = 0.0
            return
        threshold = self.bundle.threshold
        mask_ref = probs_to_mask(reference, threshold)
        mask = probs_to_mask(np.nan_to_num(candidate, nan=0.0), threshold)
        self.identical = self.identical and bool(np.array_equal(mask, mask_ref))
        self.per_case[case_id] = mean_dice(mask, mask_ref, foreground_classes(reference.shape[-1]))

    def summary(self) -> dict[str, Any]:
        scores = list(self.per_case.values())
        return {
            "mean_dice_agreement": float(np.mean(scores)) if scores else 0.0,
            "min_dice_agreement": float(min(scores)) if scores else 0.0,
            "masks_identical": self.identical,
        }

    def checks(self, tolerances) -> dict[str, bool]:
        out = {}
        if tolerances.min_dice_agreement is not None:
            out["dice_agreement"] = self.summary()["mean_dice_agreement"] >= tolerances.min_dice_agreement
        if tolerances.identical_masks:
            out["identical_masks"] = self.identical
        return out

    def describe(self, check, tolerances) -> str:
        if check == "dice_agreement":
            return (f"mean Dice agreement {self.summary()['mean_dice_agreement']:.5f} < tolerance "
                    f"{tolerances.min_dice_agreement:g}")
        return "masks differ from the Keras masks, which must be identical"

    def columns(self, tolerances) -> dict[str, str]:
        s = self.summary()
        tol = tolerances.min_dice_agreement
        return {
            "mean Dice agr.": f"{s['mean_dice_agreement']:.5f}",
            "worst Dice agr.": f"{s['min_dice_agreement']:.5f}",
            "Dice tol.": "-" if tol is None else f"{tol:g}",
            "masks identical": f"{self.identical}{' (required)' if tolerances.identical_masks else ''}",
        }


class Segmentation(RuntimeTask):
    """See the module docstring."""

    name = "segmentation"
    postprocess_defaults: ClassVar[dict[str, Any]] = {"threshold": 0.5, "min_component_voxels": 0}

    def inputs(self, image: Image, bundle, batch_size: int = 8) -> CaseInputs:
        image.require_grey("Segmentation (`predict`, parity)")
        volume, record = preprocess(image, bundle.preprocess_spec)
        return CaseInputs(list(slice_batches(volume, _context(bundle), batch_size)), record, image)

    def postprocess(self, output, inputs, bundle) -> dict[str, Any]:
        probs = invert(output, inputs.record, order="linear", fill=0.0)
        return {"probs": probs, "mask": probs_to_mask(probs, bundle.threshold),
                "probs_preprocessed": output, "image": inputs.image}

    def informative(self, reference, bundle) -> bool:
        # Label 0 is background for C=1 (p < threshold) and C>1 (argmax).
        return bool(probs_to_mask(reference, bundle.threshold).any())

    def agreement(self, bundle) -> SegmentationAgreement:
        return SegmentationAgreement(bundle)

    def output_spec(self, shape, class_names, postprocess) -> dict[str, Any]:
        channels = shape[-1]
        if len(shape) != 4:
            raise ConfigError(
                "A segmentation model must output (N, H, W, C) probabilities. "
                f"Received: output shape {list(shape)}"
            )
        check_class_names(class_names, channels, f"a model with {channels} output channel(s)")
        min_voxels = postprocess.get("min_component_voxels", 0)
        if not (isinstance(min_voxels, int) and min_voxels >= 0):
            raise ConfigError(
                "`postprocess['min_component_voxels']` must be an integer >= 0. "
                f"Received: {min_voxels!r}"
            )
        meaning = "sigmoid foreground probability" if channels == 1 else "softmax class probabilities"
        return {"layout": "NHWC", "shape": [None, None, None, channels], "meaning": meaning,
                "activation": "sigmoid" if channels == 1 else "softmax"}

    def write(self, result, out_dir, stem) -> list[Path]:
        from serving.io import write_nifti

        image: Image = result["image"]
        path = Path(out_dir) / f"{stem}_mask.nii.gz"
        write_nifti(image.with_array(result["mask"].astype(np.uint8)), path)
        return [path]
