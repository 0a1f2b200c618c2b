"""The SEEM meta-architecture for closed-set instance segmentation (detectron2 convention).

``SEEM(cfg)`` holds ``dilation_kernel`` (a 3x3 ones buffer upstream uses to dilate spatial
prompts), ``backbone`` (FocalNet), ``sem_seg_head`` (``pixel_decoder`` + ``predictor``) and
``criterion`` -- X-Decoder/SEEM's module tree. With ``cfg.lang_encoder`` the state-dict keys are
those of the official v1 checkpoint (``seem_focall``: all 933 with ``cfg.spatial``, the 927 of
``SPATIAL.ENABLED False`` without); SEEM's interactive (spatial / grounding) prompts are never run,
closed-set instance segmentation does not use them. Without a language encoder the classes are a
learned table (``seem_tiny``, ``seem_focall_table``).

Input: ``model(batched_inputs)``; each dict has "image" (3, H, W) uint8 in ``cfg.input_format``
order, optional "height"/"width" (output size, default H/W) and, in training, "instances"
(detectron2 ``Instances`` with gt_classes (K,) and gt_masks (BitMasks or (K, H, W) bool)).
Output: training -> weighted losses {name: scalar} (sum = total loss); eval -> one
{"instances": Instances(pred_masks (K, height, width) bool, pred_boxes, scores, pred_classes)} per
image. Boxes are the tight boxes of the predicted masks (SEEM has no box head).
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.structures import ImageList, Instances
from torch import nn

from models.backbones import build_backbone
from models.matcher import HungarianMatcher
from models.meta_arch_base import MaskMetaArch, topk_instance_inference
from models.peft.targets import PeftSpec
from models.seem.config import SEEMConfig
from models.seem.criterion import SEEMCriterion, build_seem_weight_dict
from models.seem.decoder import SEEMDecoder
from models.seem.language import LanguageEncoder
from models.seem.peft_spec import SEEM_SPEC
from models.seem.pixel_decoder import SEEMPixelDecoder

__all__ = ["SEEM", "SEEMHead", "softmax_instance_inference"]


class SEEMHead(nn.Module):
    """Pixel decoder + predictor (key prefix ``sem_seg_head``)."""

    def __init__(self, pixel_decoder: SEEMPixelDecoder, predictor: SEEMDecoder) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, Any]:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)  # type: ignore[no-any-return]


def softmax_instance_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, topk: int) -> Instances:
    """Top-k (query, class) pairs of one image (Mask2Former's instance inference).

    mask_cls (Q, K + 1) logits (last = no object); mask_pred (Q, H, W) logits at output size.
    score = softmax class probability * mean mask probability inside the binary mask; boxes are
    the masks' tight boxes.
    """
    return topk_instance_inference(mask_cls.softmax(-1)[:, :-1], mask_pred, topk)


class SEEM(MaskMetaArch):
    """SEEM for closed-set instance segmentation; see the module docstring for the I/O contract."""

    peft_family = "seem"

    def __init__(self, cfg: SEEMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # constant, kept as the official checkpoints keep it (first key of their state_dict)
        self.register_buffer("dilation_kernel", torch.ones(1, 1, 3, 3))
        self.backbone = build_backbone(cfg.backbone, **dict(cfg.backbone_kwargs))
        pixel_decoder = SEEMPixelDecoder(
            self.backbone.output_shape(),
            in_features=cfg.in_features,
            conv_dim=cfg.conv_dim,
            mask_dim=cfg.mask_dim,
            nheads=cfg.nheads,
            enc_layers=cfg.enc_layers,
            dim_feedforward=cfg.enc_dim_feedforward,
            dropout=cfg.dropout,
            gn_groups=cfg.gn_groups,
            num_feature_levels=cfg.num_feature_levels,
        )
        predictor = SEEMDecoder(
            in_channels=cfg.conv_dim,
            num_classes=cfg.num_classes,
            hidden_dim=cfg.hidden_dim,
            dim_proj=cfg.dim_proj,
            num_queries=cfg.num_queries,
            nheads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward,
            dec_layers=cfg.dec_layers,
            mask_dim=cfg.mask_dim,
            dropout=cfg.dropout,
            num_feature_levels=cfg.num_feature_levels,
            lang_encoder=LanguageEncoder(
                cfg.num_classes,
                cfg.lang_width,
                cfg.lang_layers,
                cfg.lang_heads,
                cfg.lang_vocab,
                cfg.lang_context,
                cfg.dim_proj,
            )
            if cfg.lang_encoder
            else None,
            spatial=cfg.spatial,
        )
        self.sem_seg_head = SEEMHead(pixel_decoder, predictor)
        matcher = HungarianMatcher(
            cost_class=cfg.class_weight,
            cost_mask=cfg.mask_weight,
            cost_dice=cfg.dice_weight,
            cost_box=0.0,
            cost_giou=0.0,
            num_points=cfg.train_num_points,
            class_cost_type="softmax",
        )
        weight_dict = build_seem_weight_dict(
            cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.dec_layers if cfg.deep_supervision else 0
        )
        self.criterion = SEEMCriterion(
            cfg.num_classes,
            matcher,
            weight_dict,
            eos_coef=cfg.no_object_weight,
            num_points=cfg.train_num_points,
            oversample_ratio=cfg.oversample_ratio,
            importance_sample_ratio=cfg.importance_sample_ratio,
        )
        self.register_pixel_stats()

    # Checkpoint verification (models.checkpoint): buffers rebuilt from the config, and official keys
    # this configuration leaves out on purpose (spatial prompts off: loading drops them, no error).
    derived_state_keys = ("dilation_kernel", "criterion.empty_weight")
    SPATIAL_KEYS = (
        "sem_seg_head.predictor.mask_sptial_embed.0",
        "sem_seg_head.predictor.mask_sptial_embed.1",
        "sem_seg_head.predictor.mask_sptial_embed.2",
        "sem_seg_head.predictor.spatial_embed.weight",
        "sem_seg_head.predictor.spatial_featured.weight",
        "sem_seg_head.predictor.pn_indicator.weight",
    )

    @property
    def ignored_checkpoint_keys(self) -> tuple[str, ...]:
        return () if self.cfg.spatial or not self.cfg.lang_encoder else self.SPATIAL_KEYS

    @staticmethod
    def peft_spec() -> PeftSpec:
        """The SEEM PEFT target table (:data:`models.seem.peft_spec.SEEM_SPEC`)."""
        return SEEM_SPEC

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        images = self.preprocess(batched_inputs)
        features = self.backbone(images.tensor)
        outputs = self.sem_seg_head(features)
        if self.training:
            targets = self.training_targets(batched_inputs, images)
            return self.weighted_losses(self.criterion(outputs, targets))
        return self.postprocess(outputs, batched_inputs, images)

    def postprocess(
        self, outputs: dict[str, Any], batched_inputs: list[dict[str, Any]], images: ImageList
    ) -> list[dict[str, Instances]]:
        """Masks upsampled to the padded size, cropped to the image, resized to (height, width)."""
        topk = self.cfg.test_topk_per_image
        return [
            {"instances": softmax_instance_inference(cls.float(), masks, topk)}
            for cls, (masks, _, _) in zip(
                outputs["pred_logits"], self.output_masks(outputs["pred_masks"], batched_inputs, images)
            )
        ]
