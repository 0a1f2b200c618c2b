"""LoRA-adapted linear layer whose base keys stay those of ``nn.Linear``.

``LoRALinear`` subclasses ``nn.Linear``: ``weight`` and ``bias`` keep their names and shapes, so a
pretrained state_dict loads unchanged (with ``strict=False`` for the added ``lora_A``/``lora_B``).
:class:`kernels.MSDeformAttn` recognises it on ``sampling_offsets`` / ``value_proj`` and fuses the
low-rank term into its kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "lora_linear", "fused_lora_terms", "is_plain_linear"]


def fused_lora_terms(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(dropout(x) A^T, B, scaling)`` of an unmerged plain LoRA on ``module``, else None.

    Knows :class:`LoRALinear` and any module with a ``fused_lora_terms(x)`` method (the peft LoRA
    layer of :mod:`models.peft.lora.layer` has one; kernels must not import models). None means the
    module runs as a plain linear (no LoRA, or merged) or cannot be fused (a variant such as DoRA):
    callers check :func:`is_plain_linear` to tell the two apart.
    """
    if isinstance(module, LoRALinear):
        return None if module.merged else (module.lora_hidden(x), module.lora_B, module.scaling)
    own = getattr(module, "fused_lora_terms", None)
    return own(x) if callable(own) else None


def is_plain_linear(module: nn.Module) -> bool:
    """True when ``module``'s output is exactly ``x W^T + b`` with its ``weight``/``bias`` attributes:
    ``nn.Linear``, a merged :class:`LoRALinear`, or a module that says so (``runs_as_plain_linear``)."""
    if isinstance(module, LoRALinear):
        return module.merged
    own = getattr(module, "runs_as_plain_linear", None)
    if callable(own):
        return bool(own())
    return isinstance(module, nn.Linear)


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    t: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """``x W^T + b + scaling * t B^T`` where ``t = dropout(x) A^T`` was computed by the caller.

    The low-rank product is added in place into the output of the base GEMM (``addmm_`` with
    ``alpha=scaling``) instead of materialising ``t B^T`` and a second full-size sum: one fewer
    (rows, out) temporary and one fewer pass over it. ``addmm`` does not save its output for the
    backward, so the in-place add is autograd-safe.
    """
    out = F.linear(x, weight, bias)
    flat = out.view(-1, out.shape[-1])
    # .to(): under autocast the base GEMM runs in half precision while lora_B stays fp32.
    flat.addmm_(t.reshape(-1, t.shape[-1]).to(out.dtype), lora_b.t().to(out.dtype), alpha=scaling)
    return out


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a low-rank update: ``y = x W^T + b + (alpha / rank) * (dropout(x) A^T) B^T``.

    Attributes:
        lora_A: (rank, in_features), Kaiming-uniform (a=sqrt(5)) init.
        lora_B: (out_features, rank), zero init (the layer starts equal to the base layer).
        scaling: ``alpha / rank``.
        lora_dropout: ``nn.Dropout(dropout)`` or ``nn.Identity``.
        merged: True after :meth:`merge` (the update lives in ``weight``; forward is the base GEMM).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rank: int = 8,
        alpha: float = 8.0,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        dev, dt = self.weight.device, self.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=dev, dtype=dt))
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0) -> LoRALinear:
        """A LoRALinear whose base weight/bias copy ``linear``'s (device, dtype, requires_grad too)."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.weight.requires_grad_(linear.weight.requires_grad)
        if linear.bias is not None and layer.bias is not None:
            layer.bias.requires_grad_(linear.bias.requires_grad)
        layer.train(linear.training)
        return layer

    def delta_weight(self) -> torch.Tensor:
        """``scaling * B A``, shape (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``weight`` (idempotent)."""
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to floating-point rounding; idempotent)."""
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the merged weight; this layer is left unchanged."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            weight = self.weight if self.merged else self.weight + self.delta_weight().to(self.weight.dtype)
            linear.weight.copy_(weight)
            if self.bias is not None and linear.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def lora_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(x) A^T``, shape (..., rank): the only LoRA intermediate the fused kernels need."""
        return F.linear(self.lora_dropout(x), self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        return lora_linear(x, self.weight, self.bias, self.lora_hidden(x), self.lora_B, self.scaling)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"
