"""Mask DINO's training criterion: Hungarian-matched class/box/mask losses on the final
prediction, every intermediate prediction (deep supervision, suffix ``_{i}``), the two-stage
selection (``_interm``), and the denoising queries (``_dn``, ``_dn_{i}``; no matching)."""

from __future__ import annotations

from typing import Any

import torch

from models.criterion_base import SetCriterionBase, count_objects
from models.losses import box_losses, focal_class_loss
from models.maskdino.denoising import DNQueries, dn_indices
from models.matcher import HungarianMatcher

__all__ = ["MaskDINOCriterion", "build_weight_dict"]

_BASE = ("loss_ce", "loss_mask", "loss_dice", "loss_bbox", "loss_giou")


def build_weight_dict(
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
    box_weight: float,
    giou_weight: float,
    dec_layers: int,
    dn: bool,
) -> dict[str, float]:
    """Loss name -> weight for every term the criterion produces."""
    base = dict(zip(_BASE, (class_weight, mask_weight, dice_weight, box_weight, giou_weight)))
    suffixes = ["", "_interm"] + [f"_{i}" for i in range(dec_layers)]
    if dn:
        suffixes += ["_dn"] + [f"_dn_{i}" for i in range(dec_layers)]
    return {k + s: w for s in suffixes for k, w in base.items()}


class MaskDINOCriterion(SetCriterionBase):
    """forward(outputs, targets, dn) -> unweighted losses {name: scalar}.

    targets[i]: "labels" (M,), "masks" (M, H, W) float/bool, "boxes" (M, 4) normalised cxcywh.
    ``empty_weight`` (K + 1,) is kept as a buffer for checkpoint compatibility (the focal loss does
    not use it).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        *,
        dn_enabled: bool = True,
        eos_coef: float = 0.1,
        focal_alpha: float = 0.25,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__(
            num_classes,
            matcher,
            weight_dict,
            eos_coef=eos_coef,
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
            persistent_empty_weight=True,
        )
        self.dn_enabled = dn_enabled
        self.focal_alpha = focal_alpha

    def losses_for(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, torch.Tensor]],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_objects: float,
    ) -> dict[str, torch.Tensor]:
        """The five loss terms of one prediction set."""
        labels = [t["labels"] for t in targets]
        loss_ce = focal_class_loss(outputs["pred_logits"], labels, indices, num_objects, self.focal_alpha)
        loss_bbox, loss_giou = box_losses(
            outputs["pred_boxes"], [t["boxes"] for t in targets], indices, num_objects
        )
        loss_mask, loss_dice = self.mask_terms(outputs["pred_masks"], targets, indices, num_objects)
        return {
            "loss_ce": loss_ce,
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
            "loss_bbox": loss_bbox,
            "loss_giou": loss_giou,
        }

    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]], dn: DNQueries | None = None
    ) -> dict[str, torch.Tensor]:
        num_objects = count_objects(targets)
        losses: dict[str, torch.Tensor] = {}

        def add(
            pred: dict[str, Any],
            suffix: str,
            indices: list[tuple[torch.Tensor, torch.Tensor]] | None,
            norm: float,
        ) -> None:
            idx = self.matcher(pred, targets) if indices is None else indices
            losses.update({k + suffix: v for k, v in self.losses_for(pred, targets, idx, norm).items()})

        add(outputs, "", None, num_objects)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            add(aux, f"_{i}", None, num_objects)
        if "interm_outputs" in outputs:
            add(outputs["interm_outputs"], "_interm", None, num_objects)
        if dn is not None and "dn_outputs" in outputs:
            fixed = dn_indices(dn)
            dn_out = outputs["dn_outputs"]
            add(dn_out, "_dn", fixed, num_objects * dn.scalar)
            for i, aux in enumerate(dn_out["aux_outputs"]):
                add(aux, f"_dn_{i}", fixed, num_objects * dn.scalar)
        elif self.dn_enabled:
            # no DN queries this step (no objects in the batch): zeros keep the set of loss names fixed
            zero = outputs["pred_logits"].sum() * 0.0
            suffixes = ["_dn"] + [f"_dn_{i}" for i in range(len(outputs.get("aux_outputs", [])))]
            losses.update({k + s: zero for s in suffixes for k in _BASE})
        return losses
