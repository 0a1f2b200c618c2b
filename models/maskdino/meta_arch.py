"""The Mask DINO meta-architecture (detectron2 convention) and its head.

``MaskDINO(cfg)`` holds ``backbone``, ``sem_seg_head`` (``pixel_decoder`` + ``predictor``) and
``criterion`` -- the official module tree, so official state dicts load key for key.

Input: ``model(batched_inputs)``; each dict has "image" (3, H, W) uint8 in ``cfg.input_format``
order, optional "height"/"width" (output size, default H/W) and, in training, "instances"
(detectron2 ``Instances`` with gt_classes (K,), gt_masks (BitMasks or (K, H, W) bool) and
optionally gt_boxes (Boxes, xyxy pixels; derived from the masks when absent)).
Output: training -> weighted losses {name: scalar} (sum = total loss); eval -> one
{"instances": Instances(pred_masks (K, height, width) bool, pred_boxes, scores, pred_classes)} per image.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.structures import ImageList, Instances
from torch import nn

from models.backbones import build_backbone
from models.box_ops import box_cxcywh_to_xyxy
from models.maskdino.config import MaskDINOConfig
from models.maskdino.criterion import MaskDINOCriterion, build_weight_dict
from models.maskdino.denoising import DNQueries
from models.maskdino.pixel_decoder import MaskDINOPixelDecoder
from models.maskdino.predictor import MaskDINOPredictor
from models.matcher import HungarianMatcher
from models.meta_arch_base import MaskMetaArch, topk_instance_inference

__all__ = ["MaskDINO", "MaskDINOHead", "instance_inference"]


class MaskDINOHead(nn.Module):
    """Pixel decoder + predictor (upstream ``MaskDINOHead``; key prefix ``sem_seg_head``)."""

    def __init__(
        self, pixel_decoder: MaskDINOPixelDecoder, predictor: MaskDINOPredictor, num_classes: int
    ) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.num_classes = num_classes

    def forward(
        self, features: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[dict[str, Any], DNQueries | None]:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features, targets)


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    boxes_xyxy: torch.Tensor,
    topk: int,
    box_source: str = "pred",
) -> Instances:
    """Top-k (query, class) pairs of one image.

    mask_cls (Q, K) logits; mask_pred (Q, H, W) logits at output size; boxes_xyxy (Q, 4) pixels.
    score = sigmoid(class logit) * mean mask probability inside the binary mask. ``box_source``
    "mask" replaces the predicted boxes by the tight boxes of the binary masks.
    """
    boxes = None if box_source == "mask" else boxes_xyxy
    return topk_instance_inference(mask_cls.sigmoid(), mask_pred, topk, boxes)


class MaskDINO(MaskMetaArch):
    """Mask DINO for instance segmentation; see the module docstring for the I/O contract."""

    peft_family = "maskdino"
    target_boxes = True

    def __init__(self, cfg: MaskDINOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, **dict(cfg.backbone_kwargs))
        shapes = self.backbone.output_shape()
        pixel_decoder = MaskDINOPixelDecoder(
            shapes,
            in_features=cfg.in_features,
            transformer_in_features=cfg.transformer_in_features,
            total_num_feature_levels=cfg.total_num_feature_levels,
            conv_dim=cfg.conv_dim,
            mask_dim=cfg.mask_dim,
            nheads=cfg.nheads,
            enc_layers=cfg.enc_layers,
            dim_feedforward=cfg.enc_dim_feedforward,
            dropout=cfg.dropout,
            n_points=cfg.n_points,
            common_stride=cfg.common_stride,
            gn_groups=cfg.gn_groups,
        )
        predictor = MaskDINOPredictor(
            num_classes=cfg.num_classes,
            hidden_dim=cfg.hidden_dim,
            num_queries=cfg.num_queries,
            nheads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward,
            dec_layers=cfg.dec_layers,
            mask_dim=cfg.mask_dim,
            n_levels=cfg.total_num_feature_levels,
            n_points=cfg.n_points,
            dropout=cfg.dropout,
            dn=cfg.dn,
            dn_num=cfg.dn_num,
            noise_scale=cfg.noise_scale,
            initialize_box_type=cfg.initialize_box_type,
            class_prior_prob=cfg.class_prior_prob,
        )
        self.sem_seg_head = MaskDINOHead(pixel_decoder, predictor, cfg.num_classes)
        matcher = HungarianMatcher(
            cost_class=cfg.class_weight,
            cost_mask=cfg.mask_weight,
            cost_dice=cfg.dice_weight,
            cost_box=cfg.box_weight,
            cost_giou=cfg.giou_weight,
            num_points=cfg.train_num_points,
            focal_alpha=cfg.focal_alpha,
        )
        weight_dict = build_weight_dict(
            cfg.class_weight,
            cfg.mask_weight,
            cfg.dice_weight,
            cfg.box_weight,
            cfg.giou_weight,
            cfg.dec_layers if cfg.deep_supervision else 0,
            cfg.dn != "no",
        )
        self.criterion = MaskDINOCriterion(
            cfg.num_classes,
            matcher,
            weight_dict,
            dn_enabled=cfg.dn != "no",
            eos_coef=cfg.no_object_weight,
            focal_alpha=cfg.focal_alpha,
            num_points=cfg.train_num_points,
            oversample_ratio=cfg.oversample_ratio,
            importance_sample_ratio=cfg.importance_sample_ratio,
        )
        self.register_pixel_stats()

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        images = self.preprocess(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            targets = self.training_targets(batched_inputs, images)
            outputs, dn = self.sem_seg_head(features, targets)
            return self.weighted_losses(self.criterion(outputs, targets, dn))
        outputs, _ = self.sem_seg_head(features)
        return self.postprocess(outputs, batched_inputs, images)

    def postprocess(
        self, outputs: dict[str, Any], batched_inputs: list[dict[str, Any]], images: ImageList
    ) -> list[dict[str, Instances]]:
        """Masks upsampled to the padded size, cropped, resized to (height, width); boxes scaled the
        same way (upstream's box scaling: normalised to the padded image)."""
        pad_h, pad_w = images.tensor.shape[-2:]
        results = []
        per_image = self.output_masks(outputs["pred_masks"], batched_inputs, images)
        for cls, boxes, (masks, (height, width), size) in zip(
            outputs["pred_logits"], outputs["pred_boxes"], per_image
        ):
            sh, sw = pad_h / size[0] * height, pad_w / size[1] * width
            xyxy = box_cxcywh_to_xyxy(boxes.float()) * torch.tensor([sw, sh, sw, sh], device=boxes.device)
            inst = instance_inference(
                cls.float(), masks, xyxy, self.cfg.test_topk_per_image, self.cfg.test_box_source
            )
            results.append({"instances": inst})
        return results
