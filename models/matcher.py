"""Hungarian matching of predictions to targets (scipy ``linear_sum_assignment``).

Generic over model families: the class cost is focal (Mask DINO) or softmax (Mask2Former/SEEM);
box costs are used when both predictions and targets carry boxes and their weights are non-zero;
mask costs (BCE + dice) are computed on ``num_points`` random points shared by predictions and
targets, as upstream.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from models.losses import batch_dice_cost, batch_sigmoid_ce_cost, point_sample

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """forward(outputs, targets) -> [(query indices, target indices)] per image (int64, CPU).

    outputs: "pred_logits" (N, Q, K) (focal) or (N, Q, K + 1) (softmax); optional "pred_masks"
    (N, Q, h, w) logits and "pred_boxes" (N, Q, 4) normalised cxcywh. targets[i]: "labels" (M,),
    optional "masks" (M, H, W) and "boxes" (M, 4).
    """

    def __init__(
        self,
        cost_class: float = 4.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        num_points: int = 12544,
        class_cost_type: str = "focal",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if class_cost_type not in ("focal", "softmax"):
            raise ValueError(f"class_cost_type must be 'focal' or 'softmax', got {class_cost_type!r}")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.cost_box, self.cost_giou = cost_box, cost_giou
        self.num_points = num_points
        self.class_cost_type = class_cost_type
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def cost_matrix(
        self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]], b: int
    ) -> torch.Tensor:
        """The (Q, M) matching cost of image ``b``."""
        logits = outputs["pred_logits"][b].float()
        tgt_ids = targets[b]["labels"].long().to(logits.device)
        if self.class_cost_type == "focal":
            prob = logits.sigmoid()
            a, g = self.focal_alpha, self.focal_gamma
            neg = (1 - a) * prob**g * (-(1 - prob + 1e-8).log())
            pos = a * (1 - prob) ** g * (-(prob + 1e-8).log())
            cost = self.cost_class * (pos[:, tgt_ids] - neg[:, tgt_ids])
        else:
            cost = -self.cost_class * logits.softmax(-1)[:, tgt_ids]

        boxes = outputs.get("pred_boxes")
        if boxes is not None and "boxes" in targets[b] and (self.cost_box or self.cost_giou):
            out_bbox = boxes[b].float()
            tgt_bbox = targets[b]["boxes"].float().to(out_bbox.device)
            cost = cost + self.cost_box * torch.cdist(out_bbox, tgt_bbox, p=1)
            cost = cost - self.cost_giou * generalized_box_iou(
                box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox)
            )

        masks = outputs.get("pred_masks")
        if masks is not None and "masks" in targets[b] and (self.cost_mask or self.cost_dice):
            out_mask = masks[b].float()[:, None]
            tgt_mask = targets[b]["masks"].to(out_mask)[:, None]
            coords = torch.rand(1, self.num_points, 2, device=out_mask.device)
            out_pts = point_sample(out_mask, coords.expand(out_mask.shape[0], -1, -1))[:, 0]
            tgt_pts = point_sample(tgt_mask, coords.expand(tgt_mask.shape[0], -1, -1))[:, 0]
            cost = cost + self.cost_mask * batch_sigmoid_ce_cost(out_pts, tgt_pts)
            cost = cost + self.cost_dice * batch_dice_cost(out_pts, tgt_pts)
        return cost

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        indices = []
        for b in range(len(targets)):
            if targets[b]["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(outputs, targets, b).cpu()
            # non-finite costs (e.g. from degenerate boxes) would make scipy fail; make them large
            cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
            i, j = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
        return indices
