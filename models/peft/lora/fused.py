"""peft's LoRA ``Linear`` layer, registered through peft's custom-module dispatch for ``nn.Linear``.

:class:`FusedLoraLinear` *is* ``peft.tuners.lora.Linear`` (same state_dict keys, ``merge`` /
``unmerge`` / DoRA / rsLoRA / PiSSA / OLoRA handled by peft) with two additions:

- ``fused_lora_terms(x)``: the factors the Triton MSDA kernel fuses into its sampling-offset
  projection (:func:`kernels.lora.fused_lora_terms` asks every ``sampling_offsets`` for them). They
  exist only for plain LoRA with one active, unmerged adapter; a variant (DoRA) or a merged layer
  returns None and the kernel falls back accordingly.
- the plain-LoRA forward adds the low-rank product in place into the base GEMM's output
  (:func:`kernels.lora.lora_linear`: one fewer full-size temporary than peft's ``result + ...``),
  the CPU path the demo's training time depends on. Any other case runs peft's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as PeftLoraLinear

from kernels.lora import lora_linear

__all__ = ["FusedLoraLinear"]


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA ``Linear`` that exposes its factors to the fused MSDA kernel."""

    def _plain_adapter(self) -> str | None:
        """The one active adapter when the layer computes ``x W^T + b + s B A dropout(x)``, else None."""
        if self.disable_adapters or self.merged:
            return None
        active = [a for a in self.active_adapters if a in self.lora_A]
        if len(active) != 1:
            return None
        name = active[0]
        if name in self.lora_variant or self.lora_bias.get(name, False):
            return None
        return name

    def fused_lora_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """``(dropout(x) A^T, B, scaling)`` for the fused kernel, or None (see the module docstring)."""
        name = self._plain_adapter()
        if name is None:
            return None
        a: Any = self.lora_A[name].weight
        b: Any = self.lora_B[name].weight
        hidden = F.linear(self.lora_dropout[name](x.to(a.dtype)), a)
        return hidden, b, float(self.scaling[name])

    def runs_as_plain_linear(self) -> bool:
        """True when the forward is exactly the base GEMM with ``self.weight`` / ``self.bias``."""
        return self.merged or self.disable_adapters or not any(a in self.lora_A for a in self.active_adapters)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs:
            return super().forward(x, *args, **kwargs)
        terms = self.fused_lora_terms(x)
        if terms is None:
            return super().forward(x)
        hidden, lora_b, scaling = terms
        base: Any = self.get_base_layer()
        return lora_linear(x, base.weight, base.bias, hidden, lora_b, scaling)

    def __repr__(self) -> str:
        return "fused_" + super().__repr__()
