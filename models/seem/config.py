"""SEEM hyper-parameters as one dataclass, and the named configurations.

``SEEM_FOCALL`` / ``SEEM_FOCALT`` follow SEEM's ``focall_unicl_lang`` / ``focalt_unicl_lang``
configs (the paper used Focal-L): pixel decoder = 6-layer transformer encoder on res5 + FPN,
conv/mask dim 512; decoder hidden 512, 8 heads, FFN 2048, 101 queries, 9 masked-attention layers
(``DEC_LAYERS: 10`` upstream counts the prediction from the learnable queries as a layer);
loss weights class 2, mask 5, dice 5, no-object 0.1; 12544 training points.

``SEEM_FOCALL`` / ``SEEM_FOCALT`` carry X-Decoder's CLIP-style language encoder (see
:mod:`models.seem.language`) and the official v1 state-dict layout, so official checkpoints load
key for key and the parameter shares are the paper's directly (full head 39.55 %: the paper's model
has the spatial-prompt parts off, ``spatial=False``, as SEEM-Adapter's config; ``spatial=True``
builds all 933 keys of the released ``focall_unicl_lang_v1``).

Closed-set classification without a language encoder (``lang_encoder=False``: ``SEEM_FOCALL_TABLE``,
``SEEM_TINY``): class embeddings are a learned table (``class_embed.weight``, K x dim_proj) plus a
learned no-object embedding, compared with the projected queries by scaled cosine similarity as
X-Decoder does with text embeddings. ``SEEM_TINY`` is a CPU-sized model for tests and demos.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.config_base import ModelConfigBase
from models.errors import UserError

__all__ = ["SEEMConfig", "SEEM_FOCALL", "SEEM_FOCALL_TABLE", "SEEM_FOCALT", "SEEM_TINY"]


@dataclasses.dataclass(frozen=True)
class SEEMConfig(ModelConfigBase):
    """All knobs of the model. Names mirror the upstream config keys (lower case)."""

    config_label: ClassVar[str] = "SEEM"

    num_classes: int = 80
    # backbone
    backbone: str = "focal_large"
    backbone_kwargs: tuple[tuple[str, Any], ...] = ()
    # pixel decoder (transformer_encoder_fpn)
    in_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    conv_dim: int = 512
    mask_dim: int = 512
    enc_layers: int = 6
    enc_dim_feedforward: int = 2048
    gn_groups: int = 32
    # decoder
    hidden_dim: int = 512
    dim_proj: int = 512
    nheads: int = 8
    dec_layers: int = 9  # masked-attention layers (upstream DEC_LAYERS - 1)
    dim_feedforward: int = 2048
    dropout: float = 0.0
    num_queries: int = 101
    num_feature_levels: int = 3
    # optional language encoder (X-Decoder ``MODEL.TEXT``); False: learned class table
    lang_encoder: bool = False
    lang_width: int = 512
    lang_layers: int = 12
    lang_heads: int = 8
    lang_vocab: int = 49408
    lang_context: int = 77
    # SEEM's interactive spatial-prompt parameters (upstream MODEL.DECODER.SPATIAL.ENABLED; needs the
    # language encoder): built for checkpoint compatibility only, never run in closed-set use
    spatial: bool = False
    # criterion / matcher
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
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

    def __post_init__(self) -> None:
        self.check_common()
        if len(self.in_features) < self.num_feature_levels:
            raise UserError(f"num_feature_levels: {self.num_feature_levels} > number of in_features")
        for name in ("enc_layers", "dec_layers", "num_queries"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lang_encoder and self.lang_width % self.lang_heads:
            raise UserError(f"lang_heads: {self.lang_heads} must divide lang_width={self.lang_width}")
        if self.lang_encoder and self.num_classes + 4 > self.lang_vocab:
            raise UserError(f"lang_vocab: {self.lang_vocab} too small for {self.num_classes} class prompts")
        if self.spatial and not self.lang_encoder:
            raise UserError("spatial: the spatial-prompt parts need lang_encoder=True (the official layout)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout: must be in [0, 1), got {self.dropout}")


# the official focall_unicl_lang_v1 layout: language encoder (63.4M parameters, counted in the head as
# the paper does); spatial prompts off as in the paper (spatial=True: all official keys)
SEEM_FOCALL = SEEMConfig(lang_encoder=True)

# closed-set variant: a learned class table instead of the language encoder
SEEM_FOCALL_TABLE = SEEMConfig()

SEEM_FOCALT = SEEMConfig(backbone="focal_tiny", lang_encoder=True)

SEEM_TINY = SEEMConfig(
    backbone="focal",
    backbone_kwargs=(
        ("embed_dim", 16),
        ("depths", (1, 1, 1, 1)),
        ("focal_levels", (2, 2, 2, 2)),
        ("focal_windows", (3, 3, 3, 3)),
        ("drop_path_rate", 0.0),
    ),
    conv_dim=64,
    mask_dim=64,
    hidden_dim=64,
    dim_proj=64,
    nheads=4,
    enc_layers=2,
    enc_dim_feedforward=128,
    dec_layers=3,
    dim_feedforward=128,
    num_queries=20,
    gn_groups=32,
    train_num_points=1024,
)
