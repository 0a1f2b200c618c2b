"""LoRA through the ``peft`` library: config (with DoRA, rsLoRA, PiSSA / OLoRA inits) and the
peft ``Linear`` layer registered for ``nn.Linear`` targets, which the fused MSDA kernel reads.

``FusedLoraLinear`` resolves on first use (PEP 562): importing ``peft`` imports triton, and
triton must not be imported before a process decides whether it runs interpreted
(``TRITON_INTERPRET``, see tests/kernels/conftest.py); configs and the registry need no peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.peft.library.inject import merge_for_inference, merge_peft_layers, unmerge_peft_layers
from models.peft.lora.config import LoraConfig

if TYPE_CHECKING:
    from models.peft.lora.fused import FusedLoraLinear

# The merge functions act on every peft layer (LoRA, LoHa, IA3); the LoRA names stay for callers.
merge_lora = merge_peft_layers
unmerge_lora = unmerge_peft_layers

__all__ = ["FusedLoraLinear", "LoraConfig", "merge_for_inference", "merge_lora", "unmerge_lora"]


def __getattr__(name: str) -> Any:
    if name == "FusedLoraLinear":
        from models.peft.lora.fused import FusedLoraLinear

        return FusedLoraLinear
    raise AttributeError(f"module 'models.peft.lora' has no attribute {name!r}")
