"""Multi-scale deformable attention: a PyTorch reference path and Triton kernels with LoRA fused in.

Public surface:
- :func:`ms_deform_attn` -- the Deformable-DETR functional interface, ``backend="auto"|"torch"|"triton"``.
- :class:`MSDeformAttn` -- the module used by Mask DINO's pixel decoder and decoder; runs the
  LoRA-fused Triton kernel when its ``sampling_offsets`` / ``value_proj`` are :class:`LoRALinear`.
- :class:`LoRALinear` -- ``nn.Linear`` with a low-rank update (merge / unmerge / to_linear / wrap).
- :func:`ms_deform_attn_torch`, :func:`sampling_locations_torch` -- the grid_sample reference.

Importing this package imports torch only; Triton is imported on first Triton use
(see :mod:`kernels.triton_ops` for the ``TRITON_INTERPRET`` rule).
"""

from kernels.lora import LoRALinear
from kernels.msda import MSDeformAttn, ms_deform_attn
from kernels.reference import ms_deform_attn_torch, sampling_locations_torch

__all__ = ["LoRALinear", "MSDeformAttn", "ms_deform_attn", "ms_deform_attn_torch", "sampling_locations_torch"]
