"""Mask DINO's pixel decoder (``MaskDINOEncoder``): input projections, a 6-layer multi-scale
deformable-attention encoder, one FPN level and the mask-feature projection.

Level order follows upstream (``FEATURE_ORDER: low2high``): the transformer input is the backbone
levels from high to low resolution (e.g. res3, res4, res5), then the extra levels obtained by
stride-2 3x3 convolutions of the lowest-resolution backbone map (``input_proj`` keeps that order).
"""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from kernels import MSDeformAttn
from models.layers import AdapterSite, PositionEmbeddingSine, register_fpn_level

__all__ = ["MSDAEncoderLayer", "MSDATransformerEncoder", "MaskDINOPixelDecoder", "encoder_reference_points"]


def encoder_reference_points(spatial_shapes: torch.Tensor, batch: int, n_levels: int) -> torch.Tensor:
    """Pixel-centre reference points of all levels (no padding: valid ratios are 1).

    spatial_shapes (L, 2) (H, W) -> (batch, S, n_levels, 2) with (x, y) in (0, 1).
    """
    refs = []
    for h, w in spatial_shapes.tolist():
        ys = (torch.arange(h, dtype=torch.float32, device=spatial_shapes.device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=spatial_shapes.device) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    ref = torch.cat(refs, 0)
    return ref[None, :, None, :].expand(batch, -1, n_levels, -1)


class MSDAEncoderLayer(nn.Module):
    """Post-norm encoder layer: MSDA self-attention (+ ``self_attn_site``) and a ReLU FFN.

    forward(src (N, S, C), pos (N, S, C), reference_points (N, S, L, 2), spatial_shapes (L, 2),
    level_start_index (L,)) -> (N, S, C).
    """

    def __init__(
        self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.self_attn_site = AdapterSite()
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        out = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, None)
        # the adapter sees the layer input (the residual stream, without position embedding)
        out = self.self_attn_site(out, src)
        src = self.norm1(src + self.dropout1(out))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class _EncoderStack(nn.Module):
    """Holds ``layers`` (key prefix ``encoder.layers.i``)."""

    def __init__(self, layers: list[MSDAEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class MSDATransformerEncoder(nn.Module):
    """Level embeddings + encoder stack (upstream ``MSDeformAttnTransformerEncoderOnly``).

    forward(srcs [(N, C, H_l, W_l)], pos [(N, C, H_l, W_l)]) ->
    (memory (N, S, C), spatial_shapes (L, 2) long, level_start_index (L,) long).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        d_ffn: int,
        dropout: float,
        n_levels: int,
        n_points: int,
    ) -> None:
        super().__init__()
        self.n_levels = n_levels
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = _EncoderStack(
            [MSDAEncoderLayer(d_model, d_ffn, dropout, n_levels, nhead, n_points) for _ in range(num_layers)]
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: list[torch.Tensor], pos: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos)
            ],
            1,
        )
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flat.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        ref = encoder_reference_points(spatial_shapes, src_flat.shape[0], self.n_levels)
        out = src_flat
        for layer in self.encoder.layers:
            out = layer(out, pos_flat, ref, spatial_shapes, level_start_index)
        return out, spatial_shapes, level_start_index


class MaskDINOPixelDecoder(nn.Module):
    """Multi-scale encoder + FPN producing mask features and the decoder's memory levels.

    forward(features {name: (N, C_f, H_f, W_f)}) ->
      mask_features (N, mask_dim, H/4, W/4),
      multi_scale_features: ``total_num_feature_levels`` maps (N, conv_dim, H_l, W_l) in encoder order.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        in_features: tuple[str, ...],
        transformer_in_features: tuple[str, ...],
        total_num_feature_levels: int,
        conv_dim: int,
        mask_dim: int,
        nheads: int,
        enc_layers: int,
        dim_feedforward: int,
        dropout: float,
        n_points: int,
        common_stride: int,
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        self.in_features = sorted(in_features, key=lambda k: input_shape[k].stride)
        # transformer inputs from high to low resolution
        self.transformer_in_features = sorted(transformer_in_features, key=lambda k: input_shape[k].stride)
        channels = [input_shape[k].channels for k in self.transformer_in_features]
        self.low_resolution_feature = self.transformer_in_features[channels.index(max(channels))]
        self.num_backbone_levels = len(self.transformer_in_features)
        self.total_num_feature_levels = total_num_feature_levels

        convs = [nn.Conv2d(c, conv_dim, kernel_size=1) for c in channels]
        in_ch = max(channels)
        for _ in range(total_num_feature_levels - self.num_backbone_levels):
            convs.append(nn.Conv2d(in_ch, conv_dim, kernel_size=3, stride=2, padding=1))
            in_ch = conv_dim
        for conv in convs:
            nn.init.xavier_uniform_(conv.weight, gain=1)
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)
        self.input_proj = nn.ModuleList(
            nn.Sequential(conv, nn.GroupNorm(gn_groups, conv_dim)) for conv in convs
        )

        self.transformer = MSDATransformerEncoder(
            conv_dim, nheads, enc_layers, dim_feedforward, dropout, total_num_feature_levels, n_points
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)

        min_stride = min(input_shape[k].stride for k in self.transformer_in_features)
        self.num_fpn_levels = max(int(math.log2(min_stride) - math.log2(common_stride)), 1)
        self.fpn_features = self.in_features[: self.num_fpn_levels]
        lateral: list[nn.Module] = []
        output: list[nn.Module] = []
        for idx, f in enumerate(self.fpn_features):
            lat, outc = register_fpn_level(self, idx + 1, input_shape[f].channels, conv_dim, gn_groups)
            assert lat is not None  # every Mask DINO FPN level has a lateral
            lateral.append(lat)
            output.append(outc)
        # top-down order (low to high resolution); plain lists so they add no duplicate keys
        self._lateral_convs = lateral[::-1]
        self._output_convs = output[::-1]

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Runs under the caller's autocast (bf16 training on CUDA). Upstream forced this module to
        # fp32 ("deformable detr does not support half precision": its CUDA op had no half path);
        # MSDeformAttn now keeps what needs fp32 in fp32 itself (sampling locations, accumulation)
        # and samples bf16 values (kernels.msda).
        srcs: list[torch.Tensor] = []
        pos: list[torch.Tensor] = []
        for idx, f in enumerate(self.transformer_in_features):
            x = features[f]
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        extra: list[torch.Tensor] = []
        prev = features[self.low_resolution_feature]
        for lvl in range(self.num_backbone_levels, self.total_num_feature_levels):
            prev = self.input_proj[lvl](prev)
            extra.append(prev)
        extra = extra[::-1]  # upstream appends the extra levels in reverse creation order
        srcs += extra
        pos += [self.pe_layer(e) for e in extra]

        memory, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        n = memory.shape[0]
        sizes = spatial_shapes.prod(1).tolist()
        out = [
            z.transpose(1, 2).reshape(n, -1, h, w)
            for z, (h, w) in zip(torch.split(memory, sizes, dim=1), spatial_shapes.tolist())
        ]
        for f, lat, outc in zip(self.fpn_features[::-1], self._lateral_convs, self._output_convs):
            cur = lat(features[f])
            # upstream always fuses with the highest-resolution encoder level (out[0])
            y = cur + F.interpolate(out[0], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            out.append(outc(y))
        return self.mask_features(out[-1]), out[: self.total_num_feature_levels]
