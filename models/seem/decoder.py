"""SEEM's transformer decoder for closed-set instance segmentation (X-Decoder / Mask2Former
masked attention).

Learnable queries (``query_feat``, positions ``query_embed``) go through ``dec_layers`` rounds of
masked cross-attention to one multi-scale level (round-robin, coarse to fine), self-attention and an
FFN; after the learnable queries and after every round the heads predict class logits and masks, and
the thresholded mask (sigmoid < 0.5 -> not attended) restricts the next cross-attention.

Key names follow upstream: ``transformer_{self,cross}_attention_layers.{i}`` (``self_attn`` /
``multihead_attn``), ``transformer_ffn_layers.{i}``, ``decoder_norm``, ``query_feat``,
``query_embed``, ``level_embed``, ``input_proj``, ``class_embed``, ``mask_embed`` and, optional,
``lang_encoder`` (:mod:`models.seem.language`). With the language encoder the layout is the
official v1 checkpoint's: ``class_embed`` is a bare (hidden, dim_proj) Parameter and, with
``spatial``, the interactive-prompt parameters ``mask_sptial_embed.{0,1,2}``, ``spatial_embed``,
``spatial_featured`` and ``pn_indicator`` are present (built, never called). Without it
``class_embed`` is a :class:`ClassEmbed` holding a learned class table. Adapter sites:
``self_attn_site`` and ``multihead_attn_site`` right after each attention, before residual + norm.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

from models.layers import MLP, AdapterSite, PositionEmbeddingSine
from models.seem.language import LanguageEncoder

__all__ = ["SelfAttentionLayer", "CrossAttentionLayer", "FFNLayer", "ClassEmbed", "SEEMDecoder"]


def _xavier(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """forward(tgt (N, Q, C), query_pos (N, Q, C)) -> (N, Q, C): post-norm self-attention."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.self_attn_site = AdapterSite()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, need_weights=False)[0]
        out = self.self_attn_site(out, tgt)
        return self.norm(tgt + self.dropout(out))


class CrossAttentionLayer(nn.Module):
    """forward(tgt (N, Q, C), memory (N, S, C), memory_mask (N * heads, Q, S) bool (True = blocked)
    | None, pos (N, S, C), query_pos (N, Q, C)) -> (N, Q, C): post-norm masked cross-attention."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn_site = AdapterSite()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        out = self.multihead_attn(
            tgt + query_pos, memory + pos, memory, attn_mask=memory_mask, need_weights=False
        )[0]
        out = self.multihead_attn_site(out, tgt)
        return self.norm(tgt + self.dropout(out))


class FFNLayer(nn.Module):
    """forward(tgt (N, Q, C)) -> (N, Q, C): post-norm ReLU FFN."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        _xavier(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class ClassEmbed(nn.Module):
    """X-Decoder's language-embedding classifier, with a learned class table for closed-set use.

    ``proj`` (hidden, dim_proj) is X-Decoder's ``class_embed`` projection. With ``learned_table``
    (our closed-set default) the class embeddings are parameters: ``weight`` (K, dim_proj) stands in
    for the text embeddings of the class names, ``no_object`` (1, dim_proj) for "background" and
    ``logit_scale`` for the CLIP temperature (log(1/0.07) at init). Without it the caller passes the
    language encoder's embeddings and temperature.

    forward(x (..., hidden), text (K + 1, dim_proj) | None, logit_scale | None) -> logits
    (..., K + 1) = exp(logit_scale) * cos(x @ proj, class embeddings); the last column is "no
    object". Only ``weight`` depends on the class count: :meth:`reset_class_parameters`
    re-initialises it (``models.checkpoint`` calls it after a class-count change); the projection,
    background and temperature carry over.
    """

    weight: nn.Parameter | None
    no_object: nn.Parameter | None
    logit_scale: nn.Parameter | None

    def __init__(self, hidden_dim: int, dim_proj: int, num_classes: int, learned_table: bool = True) -> None:
        super().__init__()
        self._num_classes = num_classes
        self.proj = nn.Parameter(torch.empty(hidden_dim, dim_proj))
        nn.init.trunc_normal_(self.proj, std=0.02)
        if learned_table:
            self.weight = nn.Parameter(torch.empty(num_classes, dim_proj))
            self.no_object = nn.Parameter(torch.empty(1, dim_proj))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            nn.init.trunc_normal_(self.no_object, std=0.02)
            self.reset_class_parameters()
        else:
            for name in ("weight", "no_object", "logit_scale"):
                self.register_parameter(name, None)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def reset_class_parameters(self) -> None:
        # only the table is class-dependent; in-place so optimisers / LoRA wrappers stay valid
        if self.weight is not None:
            with torch.no_grad():
                nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor | None = None, logit_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        if text is None or logit_scale is None:
            if self.weight is None or self.no_object is None or self.logit_scale is None:
                raise ValueError("ClassEmbed without a learned table needs text embeddings and logit_scale")
            text = F.normalize(torch.cat([self.weight, self.no_object], 0), dim=-1)
            logit_scale = self.logit_scale
        emb = F.normalize(x @ self.proj, dim=-1)
        return logit_scale.exp() * emb @ text.T


class SEEMDecoder(nn.Module):
    """forward(multi_scale [(N, C, H_l, W_l)] coarse to fine, mask_features (N, mask_dim, H, W))
    -> {"pred_logits" (N, Q, K + 1), "pred_masks" (N, Q, H, W), "aux_outputs": [dec_layers dicts]}
    (``aux_outputs``: the predictions from the learnable queries and all rounds but the last)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        dim_proj: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        dropout: float = 0.0,
        num_feature_levels: int = 3,
        lang_encoder: LanguageEncoder | None = None,
        spatial: bool = False,
    ) -> None:
        super().__init__()
        self._num_classes = num_classes
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.num_feature_levels = num_feature_levels
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim:
                conv = Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed: nn.Parameter | ClassEmbed
        if lang_encoder is None:
            self.class_embed = ClassEmbed(hidden_dim, dim_proj, num_classes)
        else:
            # upstream layout: the projection itself is ``class_embed`` (a bare Parameter)
            self.class_embed = nn.Parameter(torch.empty(hidden_dim, dim_proj))
            nn.init.trunc_normal_(self.class_embed, std=0.02)
        self.lang_encoder = lang_encoder
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        if spatial:
            # SEEM's interactive spatial prompts (points, boxes, scribbles): closed-set instance
            # segmentation never calls them, they exist so that official checkpoints load key for key
            # (upstream spelling "sptial" kept).
            self.mask_sptial_embed = nn.ParameterList(
                nn.Parameter(torch.empty(mask_dim, mask_dim)) for _ in range(3)
            )
            for p in self.mask_sptial_embed:
                nn.init.trunc_normal_(p, std=0.02)
            self.spatial_embed = nn.Embedding(32, hidden_dim)
            self.spatial_featured = nn.Embedding(32, hidden_dim)
            self.pn_indicator = nn.Embedding(2, hidden_dim)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def classify(self, decoded: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Class logits (..., K + 1) of decoded queries: the learned table, or the language
        encoder's (embeddings, logit_scale) against the bare ``class_embed`` projection."""
        if isinstance(self.class_embed, ClassEmbed):
            return self.class_embed(decoded) if text is None else self.class_embed(decoded, *text)
        if text is None:
            raise ValueError("a SEEM decoder with a language encoder needs its text embeddings")
        emb = F.normalize(decoded @ self.class_embed, dim=-1)
        return text[1].exp() * emb @ text[0].T

    def prediction_heads(
        self,
        output: torch.Tensor,
        mask_features: torch.Tensor,
        attn_size: tuple[int, int],
        text: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits (N, Q, K + 1), mask logits (N, Q, H, W), attention mask for the next
        cross-attention (N * heads, Q, h * w) bool, True = blocked; detached). ``text``: the
        language encoder's (class embeddings, logit_scale), None with the learned table."""
        decoded = self.decoder_norm(output)
        logits = self.classify(decoded, text)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        with torch.no_grad():
            small = F.interpolate(masks.detach(), size=attn_size, mode="bilinear", align_corners=False)
            blocked = small.sigmoid().flatten(2) < 0.5
            blocked = blocked.repeat_interleave(self.num_heads, dim=0)
        return logits, masks, blocked

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor) -> dict[str, Any]:
        if len(multi_scale) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(multi_scale)}")
        n = mask_features.shape[0]
        srcs, poss, sizes = [], [], []
        for i, x in enumerate(multi_scale):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            poss.append(self.pe_layer(x).flatten(2).transpose(1, 2))
            srcs.append(
                (self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2)
            )
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)
        output = self.query_feat.weight[None].expand(n, -1, -1)
        text = None
        if self.lang_encoder is not None:
            text = (self.lang_encoder(), self.lang_encoder.logit_scale)
        logits, masks, attn_mask = self.prediction_heads(output, mask_features, sizes[0], text)
        preds = [(logits, masks)]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # a query whose mask blocks every location attends everywhere instead (upstream rule)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], attn_mask, poss[level], query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            logits, masks, attn_mask = self.prediction_heads(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels], text
            )
            preds.append((logits, masks))
        return {
            "pred_logits": preds[-1][0],
            "pred_masks": preds[-1][1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in preds[:-1]],
        }
