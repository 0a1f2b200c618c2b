"""A small stand-in with Mask DINO's module names and layer wiring, for PEFT unit tests.

Encoder layers: MSDeformAttn self-attention + ``self_attn_site`` + FFN. Decoder layers:
nn.MultiheadAttention self-attention (sequence-first, as in Mask DINO) + ``self_attn_site``,
MSDeformAttn cross-attention + ``cross_attn_site``, FFN. Heads: class_embed, mask_embed (MLP),
a box MLP shared as ``_bbox_embed`` / ``bbox_embed.i`` / ``decoder.bbox_embed.i``, label_enc.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels import MSDeformAttn
from models.layers import MLP, AdapterSite

D, LEVELS, HEADS, POINTS, FFN = 16, 2, 2, 2, 32
SHAPES = ((4, 4), (2, 2))
QUERIES, CLASSES, IN_CH = 5, 3, 6


class EncLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(D, LEVELS, HEADS, POINTS)
        self.self_attn_site = AdapterSite()
        self.norm1 = nn.LayerNorm(D)
        self.linear1 = nn.Linear(D, FFN)
        self.linear2 = nn.Linear(FFN, D)
        self.norm2 = nn.LayerNorm(D)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, shapes: torch.Tensor,
                start: torch.Tensor) -> torch.Tensor:  # fmt: skip
        out = self.self_attn(src + pos, ref, src, shapes, start)
        out = self.self_attn_site(out, src)
        src = self.norm1(src + out)
        return self.norm2(src + self.linear2(torch.relu(self.linear1(src))))


class DecLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(D, LEVELS, HEADS, POINTS)
        self.cross_attn_site = AdapterSite()
        self.norm1 = nn.LayerNorm(D)
        self.self_attn = nn.MultiheadAttention(D, HEADS)
        self.self_attn_site = AdapterSite()
        self.norm2 = nn.LayerNorm(D)
        self.linear1 = nn.Linear(D, FFN)
        self.linear2 = nn.Linear(FFN, D)
        self.norm3 = nn.LayerNorm(D)

    def forward(self, tgt: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, memory: torch.Tensor,
                shapes: torch.Tensor, start: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        # tgt, pos: (Q, N, D) sequence-first like Mask DINO's decoder
        q = k = tgt + pos
        out = self.self_attn(q, k, tgt, attn_mask=mask)[0]
        out = self.self_attn_site(out, tgt)
        tgt = self.norm2(tgt + out)
        out = self.cross_attn((tgt + pos).transpose(0, 1), ref, memory, shapes, start).transpose(0, 1)
        out = self.cross_attn_site(out, tgt)
        tgt = self.norm1(tgt + out)
        return self.norm3(tgt + self.linear2(torch.relu(self.linear1(tgt))))


class Encoder(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncLayer() for _ in range(n))


class Transformer(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.encoder = Encoder(n)
        self.level_embed = nn.Parameter(torch.randn(LEVELS, D))


class PixelDecoder(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.transformer = Transformer(n)
        self.mask_features = nn.Linear(D, D)


class Decoder(nn.Module):
    def __init__(self, n: int, box: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecLayer() for _ in range(n))
        self.bbox_embed = nn.ModuleList([box])


class Predictor(nn.Module):
    def __init__(self, n: int, classes: int) -> None:
        super().__init__()
        self.query_feat = nn.Embedding(QUERIES, D)
        self.query_pos = nn.Embedding(QUERIES, D)
        self.label_enc = nn.Embedding(classes, D)
        self._bbox_embed = box = MLP(D, D, 4, 3)
        self.decoder = Decoder(n, box)
        self.bbox_embed = nn.ModuleList([box])
        self.decoder_norm = nn.LayerNorm(D)
        self.class_embed = nn.Linear(D, classes)
        self.mask_embed = MLP(D, D, D, 3)


class SemSegHead(nn.Module):
    def __init__(self, enc: int, dec: int, classes: int) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(enc)
        self.predictor = Predictor(dec, classes)


class StandIn(nn.Module):
    """forward(x (N, S, IN_CH), labels (N, QUERIES) long) -> dict of outputs."""

    def __init__(self, enc: int = 2, dec: int = 2, classes: int = CLASSES) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(IN_CH, D), nn.ReLU(), nn.Linear(D, D))
        self.sem_seg_head = SemSegHead(enc, dec, classes)
        self.register_buffer("shapes", torch.tensor(SHAPES, dtype=torch.long), persistent=False)
        sizes = [h * w for h, w in SHAPES]
        self.register_buffer("start", torch.tensor([0, sizes[0]], dtype=torch.long), persistent=False)
        ref = torch.cat([_grid(h, w) for h, w in SHAPES], 0)  # (S, 2)
        self.register_buffer("ref", ref, persistent=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        head = self.sem_seg_head
        src = self.backbone(x)
        level = torch.repeat_interleave(torch.arange(LEVELS), torch.tensor([h * w for h, w in SHAPES]))
        pos = head.pixel_decoder.transformer.level_embed[level][None].expand(n, -1, -1)  # type: ignore[index]
        ref = self.ref[None, :, None, :].expand(n, -1, LEVELS, -1)  # type: ignore[index]
        for layer in head.pixel_decoder.transformer.encoder.layers:
            src = layer(src, pos, ref, self.shapes, self.start)
        memory = src
        feats = head.pixel_decoder.mask_features(memory)
        p = head.predictor
        tgt = p.query_feat.weight[:, None, :] + p.label_enc(labels).transpose(0, 1)  # (Q, N, D)
        qpos = p.query_pos.weight[:, None, :].expand(-1, n, -1)
        boxes = torch.sigmoid(p._bbox_embed(tgt)).transpose(0, 1)  # (N, Q, 4)
        ref_boxes = boxes[:, :, None, :].expand(-1, -1, LEVELS, -1)
        mask = torch.zeros(QUERIES, QUERIES, dtype=torch.bool)
        mask[0, 1] = True  # a DN-style attention mask exercises attn_mask handling
        for i, layer in enumerate(p.decoder.layers):
            tgt = layer(tgt, qpos, ref_boxes, memory, self.shapes, self.start, mask)
            boxes = torch.sigmoid(p.decoder.bbox_embed[0](tgt).transpose(0, 1) + i)
        out = p.decoder_norm(tgt).transpose(0, 1)  # (N, Q, D)
        return {
            "logits": p.class_embed(out),
            "masks": torch.einsum("nqd,nsd->nqs", p.mask_embed(out), feats),
            "boxes": boxes + p.bbox_embed[0](out).sigmoid(),
        }


def _grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def make_inputs(seed: int = 0, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    return torch.randn(n, s, IN_CH, generator=g), torch.randint(0, CLASSES, (n, QUERIES), generator=g)


def make_standin(seed: int = 0, **kw: int) -> StandIn:
    torch.manual_seed(seed)
    model = StandIn(**kw)
    # non-trivial MSDA offsets/weights so LoRA deltas on them change the output
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                m.sampling_offsets.weight.normal_(0, 0.1)
                m.attention_weights.weight.normal_(0, 0.1)
    return model
