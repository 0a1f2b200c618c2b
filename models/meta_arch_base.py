"""What the mask-classification meta-architectures (Mask DINO, SEEM) share.

Contract of :class:`MaskMetaArch` (a mixin on ``nn.Module``; it adds no parameters and no
persistent buffers, so the subclasses' state-dict keys stay the official ones):

- the subclass sets ``self.cfg`` (with ``pixel_mean``, ``pixel_std``, ``size_divisibility``,
  ``test_topk_per_image``), calls :meth:`register_pixel_stats` in ``__init__`` and owns
  ``self.sem_seg_head.predictor.num_classes`` and ``self.criterion.weight_dict``;
- :meth:`preprocess`: uint8 images in ``batched_inputs`` -> normalised, padded :class:`ImageList`;
- :meth:`prepare_targets`: detectron2 ``Instances`` -> ``{"labels", "masks"}`` per image (masks
  padded to the batch), plus ``"boxes"`` (cxcywh normalised by the unpadded size) when the class
  attribute ``target_boxes`` is true;
- :meth:`training_targets` checks that every input has "instances";
- :meth:`weighted_losses` applies the criterion's weight dict (keys without a weight are dropped);
- :meth:`output_masks` upsamples predicted masks to the padded size, crops and resizes them to each
  input's (height, width).

:func:`topk_instance_inference` is the instance inference of both heads: it takes class
*probabilities*, so Mask DINO passes ``sigmoid(logits)`` and SEEM ``softmax(logits)[:, :K]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Boxes, ImageList, Instances
from torch import nn

from models.box_ops import box_xyxy_to_cxcywh, masks_to_boxes

__all__ = ["MaskMetaArch", "topk_instance_inference", "gt_mask_tensor"]


def gt_mask_tensor(inst: Instances) -> torch.Tensor:
    """``inst.gt_masks`` as a (K, H, W) bool tensor (BitMasks or a tensor; else ValueError)."""
    masks = inst.gt_masks.tensor if isinstance(inst.gt_masks, BitMasks) else inst.gt_masks
    if not isinstance(masks, torch.Tensor):
        raise ValueError(f"gt_masks must be BitMasks or a (K, H, W) tensor, got {type(masks).__name__}")
    return masks.bool()


def topk_instance_inference(
    class_probs: torch.Tensor, mask_pred: torch.Tensor, topk: int, boxes_xyxy: torch.Tensor | None = None
) -> Instances:
    """Top-k (query, class) pairs of one image.

    class_probs (Q, K) probabilities (no "no object" column); mask_pred (Q, H, W) logits at output
    size; boxes_xyxy (Q, 4) pixels, or None for the tight boxes of the binary masks.
    score = class probability * mean mask probability inside the binary mask (mask > 0).
    """
    k = class_probs.shape[1]
    scores = class_probs.flatten()
    topk = min(topk, scores.numel())
    scores_per_image, top = scores.topk(topk, sorted=False)
    labels = top % k
    query = torch.div(top, k, rounding_mode="floor")
    masks = mask_pred[query]
    binary = masks > 0
    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = binary
    if boxes_xyxy is None:
        result.pred_boxes = Boxes(masks_to_boxes(binary, mode="bitmask"))
    else:
        result.pred_boxes = Boxes(boxes_xyxy[query])
    fb = binary.flatten(1).float()
    mask_scores = (masks.sigmoid().flatten(1) * fb).sum(1) / (fb.sum(1) + 1e-6)
    result.scores = scores_per_image * mask_scores
    result.pred_classes = labels
    return result


class MaskMetaArch(nn.Module):
    """Shared pre/post-processing of the meta-architectures; see the module docstring."""

    cfg: Any
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    target_boxes: bool = False  # prepare_targets adds normalised cxcywh "boxes"

    def register_pixel_stats(self) -> None:
        """Non-persistent (C, 1, 1) buffers from ``cfg.pixel_mean`` / ``cfg.pixel_std``: they move
        with ``.to()`` but add no state-dict keys."""
        self.register_buffer("pixel_mean", torch.tensor(self.cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.cfg.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return int(self.sem_seg_head.predictor.num_classes)  # type: ignore[union-attr,operator,arg-type]

    def preprocess(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """Normalise and pad to ``size_divisibility``: tensor (N, 3, H_pad, W_pad)."""
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.cfg.size_divisibility)

    def prepare_targets(self, instances: list[Instances], images: ImageList) -> list[dict[str, torch.Tensor]]:
        """Per image: labels (M,), masks padded to the batch (M, H_pad, W_pad) bool and, with
        ``target_boxes``, boxes cxcywh normalised by the unpadded image size (as upstream; gt_boxes
        when present, else the masks' tight boxes)."""
        h_pad, w_pad = images.tensor.shape[-2:]
        out = []
        for inst in instances:
            inst = inst.to(self.device)
            masks = gt_mask_tensor(inst)
            padded = torch.zeros((masks.shape[0], h_pad, w_pad), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            target = {"labels": inst.gt_classes.long(), "masks": padded}
            if self.target_boxes:
                h, w = inst.image_size
                if inst.has("gt_boxes"):
                    xyxy = inst.gt_boxes.tensor.float()
                else:
                    xyxy = masks_to_boxes(masks, mode="bitmask")
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
                target["boxes"] = box_xyxy_to_cxcywh(xyxy) / scale
            out.append(target)
        return out

    def training_targets(
        self, batched_inputs: list[dict[str, Any]], images: ImageList
    ) -> list[dict[str, torch.Tensor]]:
        """:meth:`prepare_targets` of the inputs' "instances" (ValueError if one has none)."""
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("training inputs need 'instances'")
        return self.prepare_targets([x["instances"] for x in batched_inputs], images)

    def weighted_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss times its weight in ``self.criterion.weight_dict``; unweighted keys dropped."""
        weights: dict[str, float] = self.criterion.weight_dict  # type: ignore[union-attr,assignment]
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    @staticmethod
    def output_masks(
        pred_masks: torch.Tensor, batched_inputs: list[dict[str, Any]], images: ImageList
    ) -> Iterator[tuple[torch.Tensor, tuple[int, int], tuple[int, int]]]:
        """Per image: (mask logits (Q, height, width), (height, width), unpadded image size).

        Masks are upsampled to the padded size, cropped to the image and resized to the input's
        "height"/"width" (default: the image size)."""
        mask_pred = F.interpolate(
            pred_masks, size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
        )
        for masks, inp, size in zip(mask_pred, batched_inputs, images.image_sizes):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            yield sem_seg_postprocess(masks, size, height, width), (height, width), (size[0], size[1])
