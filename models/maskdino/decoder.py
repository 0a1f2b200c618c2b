"""The deformable transformer decoder of Mask DINO (DINO-style): layers, query positions from
reference boxes, and layer-wise box refinement with the shared box MLP.

All tensors are batch-first: queries (N, Q, C), memory (N, S, C), boxes (N, Q, 4) as
(cx, cy, w, h) in [0, 1] after sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import MSDeformAttn
from models.layers import MLP, AdapterSite, inverse_sigmoid, sine_embed_for_boxes

__all__ = ["DeformableDecoderLayer", "DeformableTransformerDecoder"]


class DeformableDecoderLayer(nn.Module):
    """Self-attention (nn.MultiheadAttention) -> MSDA cross-attention -> FFN, each post-norm.

    Registration order (cross_attn, norm1, self_attn, norm2, linear1, linear2, norm3) and names
    follow upstream, so official checkpoints load key for key. Adapter sites: ``self_attn_site``,
    ``cross_attn_site`` (called before the residual add; they see the attention's input ``tgt``).
    """

    def __init__(
        self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.cross_attn_site = AdapterSite()
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.self_attn_site = AdapterSite()
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        self_attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt, query_pos (N, Q, C); reference_points (N, Q, L, 4); memory (N, S, C);
        self_attn_mask (Q, Q) bool, True = may not attend. Returns (N, Q, C).

        Runs under the caller's autocast (upstream forced fp32 because its MSDA op had no half
        path): the cross-attention samples bf16 values with fp32 accumulation and keeps the
        reference boxes and sampling locations in fp32 (kernels.msda).
        """
        q = k = tgt + query_pos
        sa = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        sa = self.self_attn_site(sa, tgt)
        tgt = self.norm2(tgt + self.dropout2(sa))

        ca = self.cross_attn(
            tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index, None
        )
        ca = self.cross_attn_site(ca, tgt)
        tgt = self.norm1(tgt + self.dropout1(ca))

        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class DeformableTransformerDecoder(nn.Module):
    """Stack of decoder layers with box refinement.

    ``norm`` is the predictor's ``decoder_norm`` (shared module); ``bbox_embed`` (a ModuleList of
    the one shared box MLP) is attached by the predictor after construction, as upstream.
    """

    bbox_embed: nn.ModuleList

    def __init__(
        self,
        num_layers: int,
        norm: nn.LayerNorm,
        d_model: int,
        d_ffn: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, d_ffn, dropout, n_levels, n_heads, n_points)
            for _ in range(num_layers)
        )
        self.norm = norm
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        refpoints_unsigmoid: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns (hs, references): ``num_layers`` normed outputs (N, Q, C) and ``num_layers + 1``
        reference boxes (N, Q, 4) in [0, 1] (the input boxes, then each layer's refinement)."""
        n_levels = spatial_shapes.shape[0]
        reference_points = refpoints_unsigmoid.sigmoid()
        references = [reference_points]
        hs = []
        output = tgt
        for layer_id, layer in enumerate(self.layers):
            # no padding masks upstream: valid ratios are all 1, so every level sees the same box
            ref_input = reference_points[:, :, None].expand(-1, -1, n_levels, -1)
            query_pos = self.ref_point_head(sine_embed_for_boxes(reference_points, self.d_model))
            output = layer(output, query_pos, ref_input, memory, spatial_shapes, level_start_index, tgt_mask)
            new_reference = (self.bbox_embed[layer_id](output) + inverse_sigmoid(reference_points)).sigmoid()
            reference_points = new_reference.detach()
            references.append(new_reference)
            hs.append(self.norm(output))
        return hs, references
