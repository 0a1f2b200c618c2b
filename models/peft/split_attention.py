"""``nn.MultiheadAttention`` with its packed input projection split into ``q_proj``/``k_proj``/``v_proj``.

Why: the paper adapts q and v (not k) of every decoder self-attention. ``nn.MultiheadAttention``
keeps q, k and v as row blocks of one ``in_proj_weight`` and never calls a submodule for them, so
no library layer can wrap "the q projection". :class:`SplitAttention` exposes the three blocks as
``nn.Linear`` submodules; any peft method (LoRA and its variants, LoHa, LoKr, IA3, ...) then
targets ``<name>.q_proj`` / ``<name>.v_proj`` with peft's own ``nn.Linear`` layer, and k is never
touched. :meth:`SplitAttention.to_packed` packs the (merged) blocks back into a plain
``nn.MultiheadAttention``, so a deployed model has the official state_dict keys again.

Parameter count is unchanged: q/k/v weights (E x E each) and biases (E each) are exactly the rows
of ``in_proj_weight`` / ``in_proj_bias``. The forward projects each input with its block, then:

- without attention weights (``need_weights=False``, what Mask DINO's decoder asks for), no
  ``bias_k``/``bias_v``/``add_zero_attn``, not ``is_causal``: the heads go straight into
  ``scaled_dot_product_attention`` with the mask prepared as torch's own
  ``multi_head_attention_forward`` prepares it (the same computation after the in-projection);
- otherwise: torch's attention with identity projections (``x I^T == x`` exactly in floating
  point). That is three extra E x E GEMMs forward and three backward per call, which made LoRA
  training through peft ~20 % slower on the CPU than the own packed LoRA layer it replaced;
  the fast path above removes them where the models use attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SLICES", "SplitAttention", "split_attention", "pack_split_attentions"]

SLICES = ("q", "k", "v")


class SplitAttention(nn.Module):
    """Drop-in for a packed ``nn.MultiheadAttention`` (``kdim == vdim == embed_dim``).

    Same ``forward`` signature and return value ``(output, weights)``; ``out_proj`` is the
    original module. Build it with :meth:`from_packed`.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("splitting needs a packed in_proj (kdim == vdim == embed_dim)")
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.dropout = mha.dropout
        self.batch_first = mha.batch_first
        self.head_dim = mha.head_dim
        self.add_zero_attn = mha.add_zero_attn
        self.bias_k, self.bias_v = mha.bias_k, mha.bias_v
        e = self.embed_dim
        w = mha.in_proj_weight
        b = mha.in_proj_bias
        for i, s in enumerate(SLICES):
            lin = nn.Linear(e, e, bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w[i * e : (i + 1) * e])
                if b is not None:
                    lin.bias.copy_(b[i * e : (i + 1) * e])
            lin.weight.requires_grad_(w.requires_grad)
            if b is not None:
                lin.bias.requires_grad_(b.requires_grad)
            setattr(self, f"{s}_proj", lin)
        self.out_proj = mha.out_proj
        self.train(mha.training)

    @classmethod
    def from_packed(cls, mha: nn.MultiheadAttention) -> SplitAttention:
        return cls(mha)

    def _plain(self, s: str) -> nn.Linear:
        """The base ``nn.Linear`` of block ``s`` (under a peft layer, its ``base_layer``)."""
        module = getattr(self, f"{s}_proj")
        while type(module) is not nn.Linear and hasattr(module, "base_layer"):
            module = module.base_layer
        if type(module) is not nn.Linear:
            raise ValueError(f"{s}_proj is a {type(module).__name__}; unload the adapters before packing")
        return module

    def to_packed(self) -> nn.MultiheadAttention:
        """A plain ``nn.MultiheadAttention`` holding the blocks' current weights (official keys).

        Raises if a block still carries an adapter layer: unload (merge) the adapters first.
        """
        blocks = [self._plain(s) for s in SLICES]
        w = blocks[0].weight
        mha = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=blocks[0].bias is not None,
            add_bias_kv=self.bias_k is not None,
            add_zero_attn=self.add_zero_attn,
            batch_first=self.batch_first,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([b.weight for b in blocks], 0))
            if mha.in_proj_bias is not None:
                mha.in_proj_bias.copy_(torch.cat([b.bias for b in blocks], 0))
            if mha.bias_k is not None and mha.bias_v is not None:
                assert self.bias_k is not None and self.bias_v is not None
                mha.bias_k.copy_(self.bias_k)
                mha.bias_v.copy_(self.bias_v)
        mha.in_proj_weight.requires_grad_(any(b.weight.requires_grad for b in blocks))
        if mha.in_proj_bias is not None:
            mha.in_proj_bias.requires_grad_(any(b.bias.requires_grad for b in blocks))
        mha.out_proj = self.out_proj
        mha.train(self.training)
        return mha

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if (
            batched
            and not need_weights
            and not is_causal
            and self.bias_k is None
            and self.bias_v is None
            and not self.add_zero_attn
        ):
            return self._attend(query, key, value, key_padding_mask, attn_mask), None
        if self.batch_first and batched:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        q, k, v = (getattr(self, f"{s}_proj")(x) for s, x in zip(SLICES, (query, key, value), strict=True))
        e = self.embed_dim
        eye = torch.eye(e, device=q.device, dtype=q.dtype)
        out, weights = F.multi_head_attention_forward(
            q, k, v, e, self.num_heads,
            None, None, self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
            self.out_proj.weight, self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal,
            use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye,
        )  # fmt: skip
        if self.batch_first and batched:
            out = out.transpose(1, 0)
        return out, weights

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Batched attention without weights: projections, heads, SDPA, out_proj (no identity GEMMs).

        Masks follow ``F.multi_head_attention_forward``: boolean masks become 0 / -inf in the
        query's dtype, ``key_padding_mask`` (N, S) is added to ``attn_mask`` ((L, S) or
        (N * heads, L, S)), dropout only in training.
        """
        if not self.batch_first:  # (L, N, E) -> (N, L, E): heads are split per batch element
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        q, k, v = (getattr(self, f"{s}_proj")(x) for s, x in zip(SLICES, (query, key, value), strict=True))
        n, tgt, e = q.shape
        src, h = k.shape[1], self.num_heads
        d = e // h
        q, k, v = (x.view(n, -1, h, d).transpose(1, 2) for x in (q, k, v))  # (N, heads, len, d)
        mask = _float_mask(attn_mask, q.dtype)
        if mask is not None:
            mask = mask.view(1, 1, tgt, src) if mask.dim() == 2 else mask.view(n, h, tgt, src)
        pad = _float_mask(key_padding_mask, q.dtype)
        if pad is not None:
            pad = pad.view(n, 1, 1, src)
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        out = F.linear(out.transpose(1, 2).reshape(n, tgt, e), self.out_proj.weight, self.out_proj.bias)
        return out if self.batch_first else out.transpose(1, 0)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = may not attend) as 0 / -inf in ``dtype``; a float mask as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def split_attention(model: nn.Module, name: str) -> SplitAttention:
    """Replace the ``nn.MultiheadAttention`` at ``name`` by its :class:`SplitAttention` (in place)."""
    module = model.get_submodule(name)
    if isinstance(module, SplitAttention):
        return module
    if not isinstance(module, nn.MultiheadAttention):
        raise ValueError(f"{name} is a {type(module).__name__}, not nn.MultiheadAttention")
    split = SplitAttention.from_packed(module)
    _set_submodule(model, name, split)
    return split


def pack_split_attentions(model: nn.Module) -> int:
    """Replace every :class:`SplitAttention` by its packed ``nn.MultiheadAttention``; returns how many."""
    names = [n for n, m in model.named_modules() if isinstance(m, SplitAttention)]
    for name in names:
        split = model.get_submodule(name)
        assert isinstance(split, SplitAttention)
        _set_submodule(model, name, split.to_packed())
    return len(names)
