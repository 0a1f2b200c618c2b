"""Parameter shares of SEEM as the paper counts them.

The paper's SEEM shares (full head 39.55 %, adapters 1.23-3.88 %, LoRA 0.34-0.54 %) are taken over
the whole upstream model, which carries X-Decoder's CLIP-style language encoder (token embedding
49408 x 512, 77 positions, 12 residual attention blocks of width 512, final LayerNorm, the 512 x 512
``lang_proj`` and ``logit_scale``) and counts it as part of the head. Our closed-set model replaces
the language encoder by a learned class table (``class_embed.weight``, ``class_embed.no_object``,
``class_embed.logit_scale``); :func:`paper_equivalent_counts` maps our counts onto the upstream
module set so the numbers can be compared with the paper's.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from models.peft.accounting import unique_parameters

__all__ = ["clip_text_encoder_params", "PaperCounts", "paper_equivalent_counts"]


def clip_text_encoder_params(
    width: int = 512, layers: int = 12, vocab: int = 49408, context: int = 77, dim_proj: int = 512
) -> int:
    """Parameters of X-Decoder's language encoder (SEEM ``MODEL.TEXT``: transformer, width 512,
    12 layers, CLIP tokenizer, context 77) including ``lang_proj`` and ``logit_scale``."""
    block = (3 * width * width + 3 * width) + (width * width + width)  # attention in/out projections
    block += 2 * (2 * width)  # ln_1, ln_2
    block += (width * 4 * width + 4 * width) + (4 * width * width + width)  # MLP c_fc, c_proj
    return vocab * width + context * width + layers * block + 2 * width + width * dim_proj + 1


_TABLE = ("class_embed.weight", "class_embed.no_object", "class_embed.logit_scale")


@dataclasses.dataclass(frozen=True)
class PaperCounts:
    """total / trainable of the upstream module set; trainable_pct = 100 * trainable / total."""

    total: int
    trainable: int
    trainable_pct: float


def paper_equivalent_counts(model: nn.Module, lang_encoder_trainable: bool = False) -> PaperCounts:
    """Counts of ``model`` (a SEEM, after ``apply_method``) with the learned class table swapped
    for the language encoder: the table leaves both counts, the language encoder joins the total
    (and the trainable count when ``lang_encoder_trainable``, i.e. for full-head tuning)."""
    total = trainable = 0
    for name, p in unique_parameters(model):
        if name.endswith(_TABLE):
            continue
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    lang = clip_text_encoder_params()
    total += lang
    if lang_encoder_trainable:
        trainable += lang
    return PaperCounts(total, trainable, 100.0 * trainable / total)
