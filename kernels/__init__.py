"""Multi-scale deformable attention: a PyTorch reference path and Triton kernels with LoRA fused in.

Public surface:
- :func:`ms_deform_attn` -- the Deformable-DETR functional interface, ``backend="auto"|"torch"|"triton"``.
- :class:`MSDeformAttn` -- the module used by Mask DINO's pixel decoder and decoder; runs the
  LoRA-fused Triton kernel when its ``sampling_offsets`` / ``value_proj`` are :class:`LoRALinear`.
- :class:`LoRALinear` -- ``nn.Linear`` with a low-rank update (merge / unmerge / to_linear / wrap).
- :func:`ms_deform_attn_torch`, :func:`sampling_locations_torch` -- the grid_sample reference.

Names resolve on first use (PEP 562), so importing this package (``peftsweep bench kernel``'s
arguments do, for ``--help``) imports nothing heavy; the first name used imports torch; Triton is imported
on first Triton use (see :mod:`kernels.triton_ops` for the ``TRITON_INTERPRET`` rule).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernels.lora import LoRALinear
    from kernels.msda import MSDeformAttn, ms_deform_attn
    from kernels.reference import ms_deform_attn_torch, sampling_locations_torch

__all__ = ["LoRALinear", "MSDeformAttn", "ms_deform_attn", "ms_deform_attn_torch", "sampling_locations_torch"]

_WHERE = {
    "LoRALinear": "lora",
    "MSDeformAttn": "msda",
    "ms_deform_attn": "msda",
    "ms_deform_attn_torch": "reference",
    "sampling_locations_torch": "reference",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kernels.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
