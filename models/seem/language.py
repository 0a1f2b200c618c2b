"""X-Decoder's language encoder (optional in our SEEM): a CLIP-style causal text transformer whose
end-of-text features, projected by ``lang_proj``, are the class embeddings.

Key layout as upstream (under ``sem_seg_head.predictor.lang_encoder``): ``lang_encoder.
{token_embedding, positional_embedding, resblocks.{i}.{attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2},
ln_final}``, ``lang_proj``, ``logit_scale``. SEEM's Focal-L/T configs use width 512, 12 layers,
8 heads, the CLIP vocabulary (49408) and context 77: 63,428,097 parameters.

There is no tokenizer here (no downloads at run time). Each class (and the last, "no object"
prompt) is a token sequence in the buffer ``class_tokens`` (K + 1, L); by default class i is
``[SOT, 1 + i, EOT]`` -- a distinct fixed prompt, so a frozen encoder gives fixed, distinct class
embeddings as upstream does for real class names. :meth:`LanguageEncoder.set_class_tokens`
installs real CLIP token ids (e.g. for "a photo of a dolphin.") when a tokenizer is at hand.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TextTransformer", "LanguageEncoder", "SOT_TOKEN", "EOT_TOKEN", "default_class_tokens"]

SOT_TOKEN = 49406  # CLIP <|startoftext|>
EOT_TOKEN = 49407  # CLIP <|endoftext|> (the largest id: CLIP pools features at the argmax id)


def default_class_tokens(num_prompts: int, vocab: int) -> torch.Tensor:
    """(num_prompts, 3) long: ``[SOT, 1 + i, EOT]`` (SOT/EOT are the last two vocabulary ids)."""
    if num_prompts + 1 >= vocab - 2:
        raise ValueError(f"vocabulary of {vocab} tokens is too small for {num_prompts} class prompts")
    i = torch.arange(num_prompts)
    return torch.stack([torch.full_like(i, vocab - 2), 1 + i, torch.full_like(i, vocab - 1)], 1)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm causal self-attention + GELU MLP: x (B, L, W) -> (B, L, W)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """forward(tokens (B, L) long, L <= context) -> (B, L, width) after ``ln_final``."""

    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.context = context
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"token sequences of length {length} exceed the context {self.context}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        for block in self.resblocks:
            x = block(x, causal)
        return self.ln_final(x)  # type: ignore[no-any-return]


class LanguageEncoder(nn.Module):
    """forward() -> normalised class embeddings (K + 1, dim_proj) of ``class_tokens``.

    In eval mode without autograd the embeddings are cached (upstream computes them once per
    dataset); the cache is keyed on the identity and version counter of every parameter and of
    the token buffer, so any weight update, LoRA merge or new prompt invalidates it.
    """

    class_tokens: torch.Tensor

    def __init__(
        self, num_classes: int, width: int, layers: int, heads: int, vocab: int, context: int, dim_proj: int
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.lang_encoder = TextTransformer(vocab, context, width, layers, heads)
        self.lang_proj = nn.Parameter(torch.empty(width, dim_proj))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)
        self.register_buffer("class_tokens", default_class_tokens(num_classes + 1, vocab), persistent=False)
        self._cache: tuple[tuple[tuple[int, int], ...], torch.Tensor] | None = None

    def set_class_tokens(self, tokens: torch.Tensor) -> None:
        """Install prompts (K + 1, L) long: one per class, the last for "no object"; features are
        taken at each row's largest token id (CLIP's end-of-text convention)."""
        current = self.class_tokens
        if tokens.dim() != 2 or tokens.shape[0] != current.shape[0]:
            raise ValueError(f"class tokens must be ({current.shape[0]}, L), got {tuple(tokens.shape)}")
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise ValueError(f"class tokens must be in [0, {self.vocab})")
        self.class_tokens = tokens.to(device=current.device, dtype=torch.long)
        self._cache = None

    def _key(self) -> tuple[tuple[int, int], ...]:
        tensors = [*self.parameters(), self.class_tokens]
        return tuple((id(t), t._version) for t in tensors)

    def forward(self) -> torch.Tensor:
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._cache is not None and self._cache[0] == self._key():
            return self._cache[1]
        tokens = self.class_tokens
        feats = self.lang_encoder(tokens)
        pooled = feats[torch.arange(tokens.shape[0], device=tokens.device), tokens.argmax(-1)]
        emb = F.normalize(pooled @ self.lang_proj, dim=-1)
        self._cache = (self._key(), emb) if cacheable else None
        return emb
