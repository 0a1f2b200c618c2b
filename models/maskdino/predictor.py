"""Mask DINO's transformer decoder head (upstream ``MaskDINODecoder``).

Two-stage query selection: every memory token gets a class score and a box (its grid proposal
refined by the shared box MLP); the top ``num_queries`` tokens become the queries. Their initial
masks give the initial boxes (mask-enhanced anchor boxes, ``initialize_box_type``). The decoder then
refines queries and boxes layer by layer; each layer's queries produce class logits (``class_embed``)
and masks (``mask_embed`` dotted with the per-pixel mask features).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from models.box_ops import box_xyxy_to_cxcywh, masks_to_boxes
from models.layers import MLP, inverse_sigmoid
from models.maskdino.decoder import DeformableTransformerDecoder
from models.maskdino.denoising import DNQueries, prepare_dn_queries

__all__ = ["MaskDINOPredictor", "encoder_output_proposals"]


def encoder_output_proposals(
    memory: torch.Tensor, spatial_shapes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid proposals for every memory token (no padding).

    memory (N, S, C) -> (memory with invalid tokens zeroed (N, S, C), proposals (N, S, 4) unsigmoided
    cxcywh; tokens whose proposal leaves (0.01, 0.99) get +inf). Level ``l`` (in memory order) uses
    width/height 0.05 * 2**l, as upstream.
    """
    n = memory.shape[0]
    proposals = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        gy, gx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=memory.device),
            torch.arange(w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        grid = (torch.stack([gx, gy], -1) + 0.5) / torch.tensor(
            [w, h], dtype=torch.float32, device=memory.device
        )
        wh = torch.full_like(grid, 0.05 * (2.0**lvl))
        proposals.append(torch.cat([grid, wh], -1).view(1, -1, 4))
    props = torch.cat(proposals, 1).expand(n, -1, -1)
    valid = ((props > 0.01) & (props < 0.99)).all(-1, keepdim=True)
    props = torch.log(props / (1 - props)).masked_fill(~valid, float("inf"))
    return memory.masked_fill(~valid, 0.0), props


class MaskDINOPredictor(nn.Module):
    """forward(multi_scale_features, mask_features, targets=None) -> (outputs, dn).

    multi_scale_features: L maps (N, C, H_l, W_l) in pixel-decoder order (high to low resolution);
    mask_features (N, mask_dim, H/4, W/4); targets (training): per image {"labels", "boxes" (normalised
    cxcywh)}. outputs: "pred_logits" (N, Q, K), "pred_masks" (N, Q, H/4, W/4), "pred_boxes" (N, Q, 4),
    in training also "aux_outputs" (list of num_layers dicts) and "interm_outputs" (the two-stage
    selection); dn: the DN queries and their outputs ("dn_outputs" in ``outputs``) or None.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        n_levels: int,
        n_points: int,
        dropout: float,
        dn: str,
        dn_num: int,
        noise_scale: float,
        initialize_box_type: str,
        class_prior_prob: float | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.hidden_dim, self.num_queries = num_classes, hidden_dim, num_queries
        self.num_layers, self.n_levels = dec_layers, n_levels
        self.dn, self.dn_num, self.noise_scale = dn, dn_num, noise_scale
        self.initialize_box_type = initialize_box_type
        self.class_prior_prob = class_prior_prob
        # registration order = upstream state_dict order
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.label_enc = nn.Embedding(num_classes, hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.decoder = DeformableTransformerDecoder(
            dec_layers, self.decoder_norm, hidden_dim, dim_feedforward, dropout, n_levels, nheads, n_points
        )
        self._bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        last = self._bbox_embed.layers[-1]
        assert isinstance(last, nn.Linear)
        nn.init.constant_(last.weight, 0.0)  # refinement starts as the identity
        nn.init.constant_(last.bias, 0.0)
        # one box MLP shared by all layers (upstream ties these names to the same module)
        self.bbox_embed = nn.ModuleList([self._bbox_embed for _ in range(dec_layers)])
        self.decoder.bbox_embed = self.bbox_embed
        self._init_class_bias()

    def _init_class_bias(self) -> None:
        if self.class_prior_prob is not None:
            p = self.class_prior_prob
            nn.init.constant_(self.class_embed.bias, -math.log((1 - p) / p))

    def reset_class_parameters(self) -> None:
        """Fresh init of the class-dependent modules (used after a class-count change)."""
        self.class_embed.reset_parameters()
        self.label_enc.reset_parameters()
        self._init_class_bias()

    def prediction_heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, pred_mask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """queries (N, Q, C) -> class logits (N, Q, K), masks (N, Q, H/4, W/4) or None."""
        decoder_output = self.decoder_norm(output)
        outputs_class = self.class_embed(decoder_output)
        if not pred_mask:
            return outputs_class, None
        outputs_mask = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoder_output), mask_features)
        return outputs_class, outputs_mask

    def _boxes_from_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Initial boxes from predicted masks (N, Q, h, w) -> unsigmoided normalised cxcywh (N, Q, 4)."""
        n, q, h, w = masks.shape
        xyxy = masks_to_boxes(masks.detach().flatten(0, 1) > 0, mode=self.initialize_box_type)
        boxes = box_xyxy_to_cxcywh(xyxy) / torch.tensor(
            [w, h, w, h], dtype=torch.float32, device=masks.device
        )
        return inverse_sigmoid(boxes.reshape(n, q, 4))

    def _pred_boxes(
        self, references: list[torch.Tensor], hs: list[torch.Tensor], ref0: torch.Tensor
    ) -> list[torch.Tensor]:
        """Box per prediction: the initial boxes, then each layer's refinement of its input boxes."""
        boxes = [ref0]
        for ref, embed, h in zip(references[:-1], self.bbox_embed, hs):
            boxes.append((embed(h) + inverse_sigmoid(ref)).sigmoid())
        return boxes

    def _select_queries(
        self, memory: torch.Tensor, spatial_shapes: torch.Tensor, mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Two-stage selection: the top ``num_queries`` memory tokens by best class logit.

        Returns (content queries (N, Q, C) detached, initial boxes (N, Q, 4) unsigmoided and
        detached, the selection's own predictions for the ``_interm`` losses).
        """
        out_memory, proposals = encoder_output_proposals(memory, spatial_shapes)
        out_memory = self.enc_output_norm(self.enc_output(out_memory))
        enc_class = self.class_embed(out_memory)
        enc_coord = self._bbox_embed(out_memory) + proposals  # unsigmoided
        topk = torch.topk(enc_class.max(-1).values, self.num_queries, dim=1).indices
        refpoint_undetach = torch.gather(enc_coord, 1, topk[..., None].expand(-1, -1, 4))
        tgt_undetach = torch.gather(out_memory, 1, topk[..., None].expand(-1, -1, self.hidden_dim))
        interm_class, interm_mask = self.prediction_heads(tgt_undetach, mask_features)
        assert interm_mask is not None
        interm = {
            "pred_logits": interm_class,
            "pred_boxes": refpoint_undetach.sigmoid(),
            "pred_masks": interm_mask,
        }
        if self.initialize_box_type != "no":
            # mask-enhanced anchor boxes: the boxes of the selected queries' initial masks
            refpoint = self._boxes_from_masks(interm_mask)
        else:
            refpoint = refpoint_undetach.detach()
        return tgt_undetach.detach(), refpoint, interm

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[dict[str, Any], DNQueries | None]:
        if len(multi_scale_features) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} feature levels, got {len(multi_scale_features)}")
        # decoder memory runs from low to high resolution (upstream reverses the pixel-decoder order)
        levels = multi_scale_features[::-1]
        memory = torch.cat([x.flatten(2).transpose(1, 2) for x in levels], 1)
        spatial_shapes = torch.as_tensor(
            [x.shape[-2:] for x in levels], dtype=torch.long, device=memory.device
        )
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        if memory.shape[1] < self.num_queries:
            raise ValueError(f"image too small: {memory.shape[1]} memory tokens < {self.num_queries} queries")

        tgt, refpoint, interm = self._select_queries(memory, spatial_shapes, mask_features)

        dn: DNQueries | None = None
        attn_mask = None
        if self.training and self.dn != "no" and targets is not None:
            dn = prepare_dn_queries(targets, self.label_enc, self.num_queries, self.dn_num, self.noise_scale)
        if dn is not None:
            tgt = torch.cat([dn.label_queries, tgt], 1)
            refpoint = torch.cat([dn.box_queries, refpoint], 1)
            attn_mask = dn.attn_mask

        preds_class: list[torch.Tensor] = []
        preds_mask: list[torch.Tensor | None] = []
        c0, m0 = self.prediction_heads(tgt, mask_features, self.training)
        preds_class.append(c0)
        preds_mask.append(m0)
        hs, references = self.decoder(tgt, memory, refpoint, spatial_shapes, level_start_index, attn_mask)
        for i, h in enumerate(hs):
            c, m = self.prediction_heads(h, mask_features, self.training or i == len(hs) - 1)
            preds_class.append(c)
            preds_mask.append(m)
        preds_box = self._pred_boxes(references, hs, refpoint.sigmoid())

        dn_outputs = None
        if dn is not None:
            p = dn.pad_size
            dn_outputs = _pack(
                [c[:, :p] for c in preds_class],
                [_slice(m, None, p) for m in preds_mask],
                [b[:, :p] for b in preds_box],
            )
            preds_class = [c[:, p:] for c in preds_class]
            preds_mask = [_slice(m, p, None) for m in preds_mask]
            preds_box = [b[:, p:] for b in preds_box]
        elif self.training:
            # keep label_enc in the graph so that every parameter receives a gradient (DDP)
            preds_class[-1] = preds_class[-1] + 0.0 * self.label_enc.weight.sum()

        out = _pack(preds_class, preds_mask, preds_box)
        if self.training:
            out["interm_outputs"] = interm
            if dn_outputs is not None:
                out["dn_outputs"] = dn_outputs
        return out, dn


def _slice(m: torch.Tensor | None, start: int | None, stop: int | None) -> torch.Tensor | None:
    return None if m is None else m[:, start:stop]


def _pack(
    classes: list[torch.Tensor], masks: list[torch.Tensor | None], boxes: list[torch.Tensor]
) -> dict[str, Any]:
    """Last prediction at top level, earlier ones as ``aux_outputs`` (deep supervision)."""
    return {
        "pred_logits": classes[-1],
        "pred_masks": masks[-1],
        "pred_boxes": boxes[-1],
        "aux_outputs": [
            {"pred_logits": c, "pred_masks": m, "pred_boxes": b}
            for c, m, b in zip(classes[:-1], masks[:-1], boxes[:-1])
        ],
    }
