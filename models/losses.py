"""Set-prediction losses shared by Mask DINO and SEEM (generic: boxes are optional).

Conventions: ``indices`` is one (query indices, target indices) pair per image, as returned by
:class:`models.matcher.HungarianMatcher`; every loss is a sum over matched pairs divided by
``num_objects`` (the batch's object count, >= 1).

- class: :func:`focal_class_loss` (sigmoid focal, Mask DINO) or :func:`softmax_class_loss`
  (cross-entropy with a no-object class, Mask2Former/SEEM);
- boxes: :func:`box_losses` (L1 + GIoU on normalised cxcywh);
- masks: :func:`mask_losses` (BCE + dice on points sampled where the prediction is uncertain, as
  in PointRend/Mask2Former), using :func:`point_sample`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = [
    "point_sample",
    "uncertain_point_coords",
    "sigmoid_focal_loss",
    "focal_class_loss",
    "softmax_class_loss",
    "box_losses",
    "mask_losses",
    "dice_loss",
    "sigmoid_ce_loss",
    "batch_dice_cost",
    "batch_sigmoid_ce_cost",
    "src_permutation",
]


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of maps at normalised points.

    inputs (N, C, H, W); coords (N, P, 2) in [0, 1] as (x, y) -> (N, C, P). Zero padding,
    align_corners=False (PointRend convention).
    """
    out = F.grid_sample(inputs, 2.0 * coords[:, :, None, :] - 1.0, align_corners=False)
    return out[:, :, :, 0]


def uncertain_point_coords(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """PointRend training points: ``importance_sample_ratio`` of them where |logit| is smallest among
    ``oversample_ratio * num_points`` random candidates, the rest uniform.

    logits (N, 1, H, W) -> coords (N, num_points, 2) in [0, 1].
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, coords).abs()  # (N, 1, P)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1).indices
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        picked = torch.cat([picked, torch.rand(n, num_random, 2, device=logits.device)], dim=1)
    return picked


def src_permutation(indices: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index, query index) of all matched predictions, concatenated over images."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src = torch.cat([src for src, _ in indices])
    return batch.long(), src.long()


def sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_objects: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """RetinaNet focal loss on logits (N, Q, K) vs 0/1 targets: mean over queries, sum, / num_objects."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_objects


def focal_class_loss(
    logits: torch.Tensor,
    target_labels: list[torch.Tensor],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    num_objects: float,
    alpha: float = 0.25,
) -> torch.Tensor:
    """Focal class loss (DINO): one-hot of matched labels, all-zero for unmatched queries.

    logits (N, Q, K); scaled by Q as upstream (focal loss is averaged over queries first).
    """
    n, q, k = logits.shape
    onehot = torch.zeros(n, q, k + 1, dtype=logits.dtype, device=logits.device)
    target_classes = torch.full((n, q), k, dtype=torch.long, device=logits.device)
    b, s = src_permutation(indices)
    if b.numel():
        target_classes[b, s] = torch.cat([t[j] for t, (_, j) in zip(target_labels, indices)]).to(
            logits.device
        )
    onehot.scatter_(2, target_classes[..., None], 1)
    return sigmoid_focal_loss(logits, onehot[..., :k], num_objects, alpha=alpha) * q


def softmax_class_loss(
    logits: torch.Tensor,
    target_labels: list[torch.Tensor],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    empty_weight: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy over K + 1 classes (last = no object), weighted by ``empty_weight`` (K + 1,).

    logits (N, Q, K + 1). Mask2Former convention: weighted mean over all queries.
    """
    n, q, k1 = logits.shape
    target_classes = torch.full((n, q), k1 - 1, dtype=torch.long, device=logits.device)
    b, s = src_permutation(indices)
    if b.numel():
        target_classes[b, s] = torch.cat([t[j] for t, (_, j) in zip(target_labels, indices)]).to(
            logits.device
        )
    return F.cross_entropy(logits.transpose(1, 2), target_classes, empty_weight)


def box_losses(
    pred_boxes: torch.Tensor,
    target_boxes: list[torch.Tensor],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    num_objects: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, 1 - GIoU) of matched normalised cxcywh boxes; pred_boxes (N, Q, 4)."""
    b, s = src_permutation(indices)
    src = pred_boxes[b, s]
    tgt = torch.cat([t[j] for t, (_, j) in zip(target_boxes, indices)]).to(src)
    l1 = F.l1_loss(src, tgt, reduction="none").sum() / num_objects
    giou = 1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
    return l1, giou.sum() / num_objects


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_objects: float) -> torch.Tensor:
    """Point BCE: logits, labels (M, P) -> mean over points, sum, / num_objects."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_objects


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_objects: float) -> torch.Tensor:
    """Soft dice (smoothing 1): logits, labels (M, P) -> sum of (1 - dice) / num_objects."""
    p = logits.sigmoid()
    numerator = 2 * (p * labels).sum(-1)
    denominator = p.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_objects


def mask_losses(
    pred_masks: torch.Tensor,
    target_masks: list[torch.Tensor],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    num_objects: float,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, dice) of matched masks on uncertainty-sampled points.

    pred_masks (N, Q, h, w) logits; target_masks[i] (M_i, H, W) (any resolution: points are
    normalised, so predictions and targets are sampled at the same image locations).
    """
    b, s = src_permutation(indices)
    src = pred_masks[b, s][:, None]
    if src.shape[0] == 0:
        zero = pred_masks.sum() * 0.0
        return zero, zero
    tgt = torch.cat([t[j] for t, (_, j) in zip(target_masks, indices)]).to(src)[:, None]
    with torch.no_grad():
        coords = uncertain_point_coords(src, num_points, oversample_ratio, importance_sample_ratio)
        labels = point_sample(tgt, coords)[:, 0]
    logits = point_sample(src, coords)[:, 0]
    return sigmoid_ce_loss(logits, labels, num_objects), dice_loss(logits, labels, num_objects)


def batch_sigmoid_ce_cost(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pairwise mean point BCE: logits (Q, P), labels (M, P) -> (Q, M)."""
    p = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ labels.T + neg @ (1 - labels).T) / p


def batch_dice_cost(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pairwise dice loss: logits (Q, P), labels (M, P) -> (Q, M)."""
    p = logits.sigmoid()
    numerator = 2 * p @ labels.T
    denominator = p.sum(-1)[:, None] + labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)
