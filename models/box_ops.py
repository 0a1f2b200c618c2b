"""Box utilities: format conversion, generalized IoU, boxes from binary masks."""

from __future__ import annotations

import torch

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "masks_to_boxes",
]


def box_cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) (x0, y0, x1, y1) -> (..., 4) (cx, cy, w, h)."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes: (N, 4), (M, 4) -> (N, M).

    Degenerate boxes (x1 < x0) are not rejected (predictions early in training can be); the
    union is clamped away from zero so the result stays finite.
    """
    area1, area2 = _area(boxes1), _area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb_c = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    area_c = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (area_c - union) / area_c.clamp(min=1e-7)


def masks_to_boxes(masks: torch.Tensor, mode: str = "bitmask") -> torch.Tensor:
    """Tight xyxy boxes (pixel units) of binary masks (K, H, W) -> (K, 4).

    ``bitmask``: detectron2 ``BitMasks.get_bounding_boxes`` convention (x1 = last column + 1;
    empty masks give zeros). ``mask2box``: Mask DINO's fast conversion (x1 = last column;
    empty masks give x0 = y0 = 1e8, x1 = y1 = 0, as upstream).
    """
    k, h, w = masks.shape
    if k == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    masks = masks.bool()
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    if mode == "bitmask":
        x_any, y_any = masks.any(dim=1), masks.any(dim=2)  # (K, W), (K, H)
        big = torch.tensor(1e8, device=masks.device)
        x0 = torch.where(x_any, xs, big).min(1).values
        y0 = torch.where(y_any, ys, big).min(1).values
        x1 = torch.where(x_any, xs + 1, -big).max(1).values
        y1 = torch.where(y_any, ys + 1, -big).max(1).values
        boxes = torch.stack([x0, y0, x1, y1], 1)
        empty = ~x_any.any(1)
        return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)
    if mode == "mask2box":
        fm = masks.float()
        x_mask = fm * xs[None, None, :]
        y_mask = fm * ys[None, :, None]
        x_max = x_mask.flatten(1).max(-1).values
        y_max = y_mask.flatten(1).max(-1).values
        x_min = x_mask.masked_fill(~masks, 1e8).flatten(1).min(-1).values
        y_min = y_mask.masked_fill(~masks, 1e8).flatten(1).min(-1).values
        return torch.stack([x_min, y_min, x_max, y_max], 1)
    raise ValueError(f"mode must be 'bitmask' or 'mask2box', got {mode!r}")
