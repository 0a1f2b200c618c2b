"""LoRA layers.

- ``nn.Linear`` targets use :class:`kernels.LoRALinear` (the kernels' fused MSDA path
  recognises it on ``sampling_offsets`` / ``value_proj``).
- Packed ``nn.MultiheadAttention`` targets use :class:`LoRAMultiheadAttention`: low-rank updates of
  exactly the named row slices of ``in_proj_weight`` (q = rows [0:E], k = [E:2E], v = [2E:3E]);
  the other rows are never touched. The ``peft`` library's MultiheadAttention LoRA adapts the
  whole packed in_proj (q, k and v) plus out_proj, which is the defect the paper lists; hence our
  own layer.

Both keep the base's parameter names (``weight``/``bias``; ``in_proj_weight``/``in_proj_bias``/
``out_proj.*``) and merge the same way: ``W <- W + (alpha / rank) * B A`` on the adapted rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels import LoRALinear

__all__ = ["LoRALinear", "LoRAMultiheadAttention", "SLICE_INDEX"]

SLICE_INDEX = {"q": 0, "k": 1, "v": 2}


class LoRAMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with LoRA on chosen slices of the packed input projection.

    For each slice s in ``slices``: ``W_s <- W_s + scaling * B_s A_s`` with ``lora_A[s]`` (r, E)
    Kaiming-uniform and ``lora_B[s]`` (E, r) zero-initialised, so the module starts equal to the
    base. In training with dropout > 0 the dropout acts on the slice's input (query for q, key for
    k, value for v), as in ``LoRALinear``; otherwise the update is applied as a weight delta.
    ``forward`` has ``nn.MultiheadAttention``'s signature and returns ``(output, weights)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        slices: tuple[str, ...] = ("q", "v"),
        rank: int = 8,
        alpha: float = 8.0,
        lora_dropout: float = 0.0,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            dropout=dropout,
            bias=bias,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
            batch_first=batch_first,
            device=device,
            dtype=dtype,
        )
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not slices or any(s not in SLICE_INDEX for s in slices):
            raise ValueError(f"slices must be a non-empty subset of q, k, v; got {slices}")
        self.slices = tuple(s for s in ("q", "k", "v") if s in slices)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        dev, dt = self.in_proj_weight.device, self.in_proj_weight.dtype
        self.lora_A = nn.ParameterDict(
            {s: nn.Parameter(torch.empty(rank, embed_dim, device=dev, dtype=dt)) for s in self.slices}
        )
        self.lora_B = nn.ParameterDict(
            {s: nn.Parameter(torch.zeros(embed_dim, rank, device=dev, dtype=dt)) for s in self.slices}
        )
        for s in self.slices:
            nn.init.kaiming_uniform_(self.lora_A[s], a=math.sqrt(5))
        self.lora_dropout: nn.Module = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.merged = False

    @classmethod
    def wrap(
        cls,
        mha: nn.MultiheadAttention,
        slices: tuple[str, ...] = ("q", "v"),
        rank: int = 8,
        alpha: float = 8.0,
        dropout: float = 0.0,
    ) -> LoRAMultiheadAttention:
        """A copy of ``mha`` (weights, requires_grad, train/eval) with LoRA on ``slices``."""
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError(
                "LoRA on MultiheadAttention needs the packed in_proj (kdim == vdim == embed_dim)"
            )
        layer = cls(
            mha.embed_dim,
            mha.num_heads,
            slices=slices,
            rank=rank,
            alpha=alpha,
            lora_dropout=dropout,
            dropout=mha.dropout,
            bias=mha.in_proj_bias is not None,
            add_bias_kv=mha.bias_k is not None,
            add_zero_attn=mha.add_zero_attn,
            batch_first=mha.batch_first,
            device=mha.in_proj_weight.device,
            dtype=mha.in_proj_weight.dtype,
        )
        base = dict(mha.named_parameters())
        with torch.no_grad():
            for name, param in layer.named_parameters():
                if name in base:
                    param.copy_(base[name])
                    param.requires_grad_(base[name].requires_grad)
        layer.train(mha.training)
        return layer

    def delta_in_proj(self) -> torch.Tensor:
        """(3E, E): ``scaling * B_s A_s`` in the rows of each adapted slice, exact zeros elsewhere."""
        e = self.embed_dim
        w = self.in_proj_weight
        blocks = []
        for s in ("q", "k", "v"):
            if s in self.slices:
                blocks.append((self.lora_B[s] @ self.lora_A[s]) * self.scaling)
            else:
                blocks.append(torch.zeros(e, e, device=w.device, dtype=w.dtype))
        return torch.cat(blocks, 0)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the updates into ``in_proj_weight``; rows of unadapted slices stay bit-identical."""
        if self.merged:
            return
        e = self.embed_dim
        for s in self.slices:
            i = SLICE_INDEX[s]
            self.in_proj_weight[i * e : (i + 1) * e].add_((self.lora_B[s] @ self.lora_A[s]) * self.scaling)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        e = self.embed_dim
        for s in self.slices:
            i = SLICE_INDEX[s]
            self.in_proj_weight[i * e : (i + 1) * e].sub_((self.lora_B[s] @ self.lora_A[s]) * self.scaling)
        self.merged = False

    def to_plain(self) -> nn.MultiheadAttention:
        """A plain ``nn.MultiheadAttention`` with the merged weights (same keys, shapes, requires_grad)."""
        w = self.in_proj_weight
        plain = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.in_proj_bias is not None,
            add_bias_kv=self.bias_k is not None,
            add_zero_attn=self.add_zero_attn,
            batch_first=self.batch_first,
            device=w.device,
            dtype=w.dtype,
        )
        own = dict(self.named_parameters())
        with torch.no_grad():
            for name, param in plain.named_parameters():
                param.copy_(own[name])
                param.requires_grad_(own[name].requires_grad)
            if not self.merged:
                plain.in_proj_weight.add_(self.delta_in_proj())
        plain.train(self.training)
        return plain

    def forward(  # type: ignore[override]
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
        if self.merged:
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        common = dict(
            training=self.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        dropout_active = self.training and isinstance(self.lora_dropout, nn.Dropout)
        if not dropout_active:
            # LoRA as a weight delta: torch's own attention, exact base semantics.
            out, weights = F.multi_head_attention_forward(
                query, key, value, self.embed_dim, self.num_heads,
                self.in_proj_weight + self.delta_in_proj(), self.in_proj_bias,
                self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
                self.out_proj.weight, self.out_proj.bias, **common,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            # Dropout acts on each slice's input, so project here and let torch's attention run
            # with identity projections (x I^T + 0 == x exactly).
            e = self.embed_dim
            w = self.in_proj_weight
            b = self.in_proj_bias
            projected = []
            for s, x in zip(("q", "k", "v"), (query, key, value), strict=True):
                i = SLICE_INDEX[s]
                y = F.linear(x, w[i * e : (i + 1) * e], None if b is None else b[i * e : (i + 1) * e])
                if s in self.slices:
                    y = (
                        y
                        + F.linear(F.linear(self.lora_dropout(x), self.lora_A[s]), self.lora_B[s])
                        * self.scaling
                    )
                projected.append(y)
            eye = torch.eye(e, device=w.device, dtype=w.dtype)
            zero_bias = None if b is None else torch.zeros_like(b)
            out, weights = F.multi_head_attention_forward(
                projected[0], projected[1], projected[2], e, self.num_heads,
                None, zero_bias, self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
                self.out_proj.weight, self.out_proj.bias,
                use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye,
                **common,  # type: ignore[arg-type]
            )  # fmt: skip
        if self.batch_first and batched:
            out = out.transpose(1, 0)
        return out, weights

    def extra_repr(self) -> str:
        return f"slices={self.slices}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"
