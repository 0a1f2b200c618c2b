"""Denoising (DN) training queries of Mask DINO (``DN: "seg"``).

Each ground-truth object is repeated in ``scalar = dn_num // max_objects_per_image`` groups with
a noised label (flipped to a random class with probability ``noise_scale / 2``) and a noised box
(centre moved by up to ``noise_scale * wh / 2``, size by up to ``noise_scale * wh``). The DN queries
are prepended to the matching queries; an attention mask keeps the matching queries from seeing
them and the groups from seeing each other. Their predictions (class, box and mask) are supervised
against the object they were made from, with no matching.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from models.layers import inverse_sigmoid

__all__ = ["DNQueries", "prepare_dn_queries", "dn_indices"]


@dataclasses.dataclass
class DNQueries:
    """DN queries for a batch.

    label_queries (N, pad_size, C); box_queries (N, pad_size, 4) unsigmoided;
    attn_mask (pad_size + num_queries,)*2 bool, True = may not attend;
    pad_size = single_pad * scalar; known_num: objects per image.
    """

    label_queries: torch.Tensor
    box_queries: torch.Tensor
    attn_mask: torch.Tensor
    pad_size: int
    single_pad: int
    scalar: int
    known_num: list[int]


def prepare_dn_queries(
    targets: list[dict[str, torch.Tensor]],
    label_enc: nn.Embedding,
    num_queries: int,
    dn_num: int,
    noise_scale: float,
    generator: torch.Generator | None = None,
) -> DNQueries | None:
    """Build the noised queries; None when the batch has no objects or ``dn_num`` is too small.

    targets[i]: "labels" (M_i,) long, "boxes" (M_i, 4) normalised cxcywh.
    """
    known_num = [int(t["labels"].numel()) for t in targets]
    single_pad = max(known_num, default=0)
    if single_pad == 0 or dn_num // single_pad == 0:
        return None
    scalar = dn_num // single_pad
    device = label_enc.weight.device
    num_classes, hidden = label_enc.weight.shape
    labels = torch.cat([t["labels"] for t in targets]).to(device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device).float()
    batch_idx = torch.cat([torch.full_like(t["labels"], i) for i, t in enumerate(targets)]).long().to(device)

    known_labels = labels.repeat(scalar)
    known_bid = batch_idx.repeat(scalar)
    known_boxes = boxes.repeat(scalar, 1)
    if noise_scale > 0:
        p = torch.rand(known_labels.shape, device=device, generator=generator)
        flip = p < noise_scale * 0.5
        random_labels = torch.randint(0, num_classes, known_labels.shape, device=device, generator=generator)
        known_labels = torch.where(flip, random_labels, known_labels)
        diff = torch.cat([known_boxes[:, 2:] / 2, known_boxes[:, 2:]], dim=1)
        jitter = torch.rand(known_boxes.shape, device=device, generator=generator) * 2 - 1.0
        known_boxes = (known_boxes + jitter * diff * noise_scale).clamp(min=0.0, max=1.0)

    pad_size = single_pad * scalar
    n = len(targets)
    label_queries = torch.zeros(n, pad_size, hidden, device=device)
    box_queries = torch.zeros(n, pad_size, 4, device=device)
    within = torch.cat([torch.arange(k, device=device) for k in known_num])
    slot = torch.cat([within + single_pad * g for g in range(scalar)])
    label_queries = label_queries.index_put((known_bid, slot), label_enc(known_labels.long()))
    box_queries = box_queries.index_put((known_bid, slot), inverse_sigmoid(known_boxes))

    size = pad_size + num_queries
    attn_mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    attn_mask[pad_size:, :pad_size] = True  # matching queries must not see the ground truth
    group = torch.arange(pad_size, device=device) // single_pad
    attn_mask[:pad_size, :pad_size] = group[:, None] != group[None, :]  # groups are independent
    return DNQueries(label_queries, box_queries, attn_mask, pad_size, single_pad, scalar, known_num)


def dn_indices(dn: DNQueries) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed (query index, target index) pairs of each image's DN queries."""
    out = []
    for k in dn.known_num:
        t = torch.arange(k).repeat(dn.scalar)
        q = (torch.arange(dn.scalar) * dn.single_pad)[:, None] + torch.arange(k)[None, :]
        out.append((q.flatten().long(), t.long()))
    return out
