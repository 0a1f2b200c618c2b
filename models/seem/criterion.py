"""SEEM's closed-set instance-segmentation criterion (Mask2Former set loss): Hungarian matching with
softmax class cost + point mask BCE/dice costs, then softmax cross-entropy with a down-weighted
no-object class and point-sampled mask BCE + dice, on the final and every auxiliary prediction
(suffix ``_{i}``). Built from the shared :mod:`models.losses` / :mod:`models.matcher`."""

from __future__ import annotations

from typing import Any

import torch

from models.criterion_base import SetCriterionBase, count_objects
from models.losses import softmax_class_loss
from models.matcher import HungarianMatcher

__all__ = ["SEEMCriterion", "build_seem_weight_dict"]

_BASE = ("loss_ce", "loss_mask", "loss_dice")


def build_seem_weight_dict(
    class_weight: float, mask_weight: float, dice_weight: float, num_aux: int
) -> dict[str, float]:
    """Loss name -> weight for the final prediction and ``num_aux`` auxiliary ones."""
    base = dict(zip(_BASE, (class_weight, mask_weight, dice_weight)))
    suffixes = [""] + [f"_{i}" for i in range(num_aux)]
    return {k + s: w for s in suffixes for k, w in base.items()}


class SEEMCriterion(SetCriterionBase):
    """forward(outputs, targets) -> unweighted losses {name: scalar}.

    outputs: "pred_logits" (N, Q, K + 1), "pred_masks" (N, Q, h, w), optional "aux_outputs";
    targets[i]: "labels" (M,), "masks" (M, H, W) bool/float. ``empty_weight`` (K + 1,) is a
    persistent buffer (1 for classes, ``eos_coef`` for no-object).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        *,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        # empty_weight is a state-dict key as in the official checkpoints; models.checkpoint treats it
        # as derived (rebuilt from the config, never an error when it is absent or of another size)
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

    def losses_for(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, torch.Tensor]],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_objects: float,
    ) -> dict[str, torch.Tensor]:
        labels = [t["labels"] for t in targets]
        loss_ce = softmax_class_loss(outputs["pred_logits"].float(), labels, indices, self.empty_weight)
        loss_mask, loss_dice = self.mask_terms(outputs["pred_masks"].float(), targets, indices, num_objects)
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}

    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        num_objects = count_objects(targets)
        losses: dict[str, torch.Tensor] = {}
        preds = [("", outputs)]
        # auxiliary predictions only when they are weighted (deep supervision); matching is costly
        preds += [
            (f"_{i}", aux)
            for i, aux in enumerate(outputs.get("aux_outputs", []))
            if f"loss_ce_{i}" in self.weight_dict
        ]
        for suffix, pred in preds:
            indices = self.matcher(pred, targets)
            losses.update(
                {k + suffix: v for k, v in self.losses_for(pred, targets, indices, num_objects).items()}
            )
        return losses
