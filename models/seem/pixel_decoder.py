"""SEEM's pixel decoder (X-Decoder ``transformer_encoder_fpn``): a plain transformer encoder on the
coarsest backbone level followed by an FPN and a 3x3 mask-feature projection.

Key names follow upstream: ``input_proj`` (1x1 conv into the encoder), ``transformer.encoder.
layers.{i}.{self_attn, linear1, linear2, norm1, norm2}``, ``layer_{i}`` (3x3 output convs, i = 1..4,
``layer_4`` after the encoder), ``adapter_{i}`` (1x1 FPN lateral convs, i = 1..3; these are FPN
laterals, not PEFT adapters), ``mask_features``.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from models.layers import AdapterSite, PositionEmbeddingSine, register_fpn_level

__all__ = ["EncoderLayer", "TransformerEncoder", "TransformerEncoderOnly", "SEEMPixelDecoder"]


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer: self-attention (+ ``self_attn_site``) and a ReLU FFN.

    forward(src (N, S, C), pos (N, S, C)) -> (N, S, C); the position embedding is added to queries
    and keys only. The adapter site sees the attention output and the layer input ``src``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.self_attn_site = AdapterSite()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        out = self.self_attn(q, k, src, need_weights=False)[0]
        out = self.self_attn_site(out, src)
        src = self.norm1(src + self.dropout1(out))
        out = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(out))


class TransformerEncoder(nn.Module):
    """``num_layers`` :class:`EncoderLayer` (key prefix ``layers.{i}``); post-norm, no final norm."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


class TransformerEncoderOnly(nn.Module):
    """Upstream ``TransformerEncoderOnly``: (N, C, H, W) maps in, same shape out (key ``encoder``)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, num_layers: int
    ) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(d_model, nhead, dim_feedforward, dropout, num_layers)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        n, c, h, w = src.shape
        out = self.encoder(src.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(n, c, h, w)


class SEEMPixelDecoder(nn.Module):
    """forward(features {name: (N, C_i, H_i, W_i)}) -> (mask_features (N, mask_dim, H/4, W/4),
    multi_scale [(N, conv_dim, H/32, W/32), (.., H/16, ..), (.., H/8, ..)]) -- the first
    ``num_feature_levels`` FPN outputs from coarse to fine, as the decoder expects."""

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        in_features: tuple[str, ...],
        conv_dim: int,
        mask_dim: int,
        nheads: int,
        enc_layers: int,
        dim_feedforward: int,
        dropout: float,
        gn_groups: int,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"backbone does not produce {missing}")
        self.in_features = sorted(in_features, key=lambda f: input_shape[f].stride or 0)
        self.num_feature_levels = num_feature_levels
        n = len(self.in_features)
        channels = [int(input_shape[f].channels or 0) for f in self.in_features]
        lateral: list[nn.Module | None] = []
        output: list[nn.Module] = []
        for idx, ch in enumerate(channels):
            # the coarsest level goes through the transformer: no lateral, its output conv takes conv_dim
            lat, out_conv = register_fpn_level(
                self, idx + 1, None if idx == n - 1 else ch, conv_dim, gn_groups
            )
            lateral.append(lat)
            output.append(out_conv)
        # plain lists (not ModuleLists): the modules are registered above under upstream names
        self._lateral = lateral[::-1]
        self._output = output[::-1]
        self.mask_features = Conv2d(conv_dim, mask_dim, 3, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.input_proj = Conv2d(channels[-1], conv_dim, 1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(conv_dim, nheads, dim_feedforward, dropout, enc_layers)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        # upstream registers the coarsest level's output conv after the transformer: move it there
        # (key order of the official state_dict; built above, so the random draws stay as they were)
        coarsest = f"layer_{n}"
        self.add_module(coarsest, self._modules.pop(coarsest))

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        multi_scale: list[torch.Tensor] = []
        y: torch.Tensor | None = None
        for idx, f in enumerate(self.in_features[::-1]):
            x = features[f]
            lat, out_conv = self._lateral[idx], self._output[idx]
            if lat is None:
                src = self.input_proj(x)
                y = out_conv(self.transformer(src, self.pe_layer(src)))
            else:
                assert y is not None
                cur = lat(x)
                y = out_conv(cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest"))
            if len(multi_scale) < self.num_feature_levels:
                multi_scale.append(y)
        assert y is not None
        return self.mask_features(y), multi_scale
