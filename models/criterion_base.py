"""What the set criteria (Mask DINO, SEEM) share: matcher, weights, the no-object weight buffer and
the point-sampled mask terms.

Contract of :class:`SetCriterionBase`: the subclass passes its options to ``__init__`` and
implements ``losses_for(outputs, targets, indices, num_objects)``; ``targets[i]`` has "labels"
(M,) and "masks" (M, H, W). ``empty_weight`` (K + 1,) is 1 for classes and ``eos_coef`` for
no-object; ``persistent_empty_weight`` decides whether it is a state-dict key (Mask DINO keeps
it for checkpoint compatibility; SEEM does not, so checkpoints load across class counts).
"""

from __future__ import annotations

import torch
from torch import nn

from models.losses import mask_losses
from models.matcher import HungarianMatcher

__all__ = ["SetCriterionBase", "count_objects"]


def count_objects(targets: list[dict[str, torch.Tensor]]) -> float:
    """Number of target objects in the batch, at least 1 (the loss normaliser)."""
    return float(max(sum(int(t["labels"].numel()) for t in targets), 1))


class SetCriterionBase(nn.Module):
    """Shared state and the mask BCE + dice terms; see the module docstring."""

    empty_weight: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        *,
        eos_coef: float,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        persistent_empty_weight: bool,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=persistent_empty_weight)

    def mask_terms(
        self,
        pred_masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_objects: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_mask, loss_dice): point-sampled BCE and dice of the matched masks."""
        return mask_losses(
            pred_masks,
            [t["masks"] for t in targets],
            indices,
            num_objects,
            self.num_points,
            self.oversample_ratio,
            self.importance_sample_ratio,
        )
