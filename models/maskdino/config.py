"""Mask DINO hyper-parameters as one dataclass, and the named configurations.

``MASKDINO_R50`` / ``MASKDINO_SWINL`` are the official COCO instance-segmentation configs
(``maskdino_R50_bs16_50ep_3s_dowsample1_2048.yaml`` and the Swin-L ``4s_dowsample1_2048`` one);
``MASKDINO_TINY`` is a CPU-sized model with the same structure for tests and demos.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.config_base import ModelConfigBase
from models.errors import UserError

__all__ = ["MaskDINOConfig", "MASKDINO_R50", "MASKDINO_SWINL", "MASKDINO_TINY"]


@dataclasses.dataclass(frozen=True)
class MaskDINOConfig(ModelConfigBase):
    """All knobs of the model. Field names mirror the official config keys (lower case)."""

    config_label: ClassVar[str] = "Mask DINO"

    num_classes: int = 80
    # backbone
    backbone: str = "resnet50"
    backbone_kwargs: tuple[tuple[str, Any], ...] = ()
    # pixel decoder (MaskDINOEncoder)
    in_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    transformer_in_features: tuple[str, ...] = ("res3", "res4", "res5")
    total_num_feature_levels: int = 4
    conv_dim: int = 256
    mask_dim: int = 256
    enc_layers: int = 6
    enc_dim_feedforward: int = 2048
    common_stride: int = 4
    gn_groups: int = 32
    # decoder (MaskDINODecoder)
    hidden_dim: int = 256
    nheads: int = 8
    n_points: int = 4
    dec_layers: int = 9
    dim_feedforward: int = 2048
    dropout: float = 0.0
    num_queries: int = 300
    dn: str = "seg"  # "no" | "seg"
    dn_num: int = 100
    noise_scale: float = 0.4
    initialize_box_type: str = "mask2box"  # "no" | "mask2box" | "bitmask"
    # None: nn.Linear default init of class_embed (upstream); p: bias = -log((1 - p) / p) as in
    # RetinaNet/DINO, which keeps the focal loss of a from-scratch model small at the start
    class_prior_prob: float | None = None
    # criterion / matcher
    class_weight: float = 4.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    box_weight: float = 5.0
    giou_weight: float = 2.0
    no_object_weight: float = 0.1
    focal_alpha: float = 0.25
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    # input / inference
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (123.675, 116.280, 103.530)
    pixel_std: tuple[float, float, float] = (58.395, 57.120, 57.375)
    input_format: str = "RGB"
    test_topk_per_image: int = 100
    test_box_source: str = (
        "pred"  # "pred": refined box predictions (upstream) | "mask": tight box of the mask
    )

    def __post_init__(self) -> None:
        self.check_common()
        if self.dn not in ("no", "seg"):
            raise UserError(f"dn: must be 'no' or 'seg', got {self.dn!r}")
        if self.initialize_box_type not in ("no", "mask2box", "bitmask"):
            raise UserError(
                f"initialize_box_type: must be no|mask2box|bitmask, got {self.initialize_box_type!r}"
            )
        if self.total_num_feature_levels < len(self.transformer_in_features):
            raise UserError("total_num_feature_levels: must be >= len(transformer_in_features)")
        if self.test_box_source not in ("pred", "mask"):
            raise UserError(f"test_box_source: must be 'pred' or 'mask', got {self.test_box_source!r}")
        if self.class_prior_prob is not None and not 0.0 < self.class_prior_prob < 1.0:
            raise UserError(f"class_prior_prob: must be in (0, 1), got {self.class_prior_prob}")
        if self.hidden_dim != self.conv_dim:
            # the decoder's input projections are identities upstream only in this case
            raise UserError("hidden_dim: must equal conv_dim (decoder input projections are identities)")


MASKDINO_R50 = MaskDINOConfig()

MASKDINO_SWINL = MaskDINOConfig(
    backbone="swin_large",
    transformer_in_features=("res2", "res3", "res4", "res5"),
    total_num_feature_levels=5,
    initialize_box_type="bitmask",
)

MASKDINO_TINY = MaskDINOConfig(
    backbone="tiny_resnet",
    backbone_kwargs=(("widths", (16, 32, 64, 128)),),
    conv_dim=64,
    mask_dim=64,
    hidden_dim=64,
    nheads=4,
    enc_layers=2,
    enc_dim_feedforward=128,
    dec_layers=3,
    dim_feedforward=128,
    num_queries=20,
    dn_num=10,
    train_num_points=512,
    class_prior_prob=0.01,
)
