"""Multi-scale deformable attention: a PyTorch reference path and Triton kernels with LoRA fused in.

Public surface:
- :func:`ms_deform_attn` -- the Deformable-DETR functional interface, ``backend="auto"|"torch"|"triton"``.
- :class:`MSDeformAttn` -- the module used by Mask DINO's pixel decoder and decoder.
"""

from kernels.msda import MSDeformAttn, ms_deform_attn
from kernels.reference import ms_deform_attn_torch

__all__ = ["MSDeformAttn", "ms_deform_attn", "ms_deform_attn_torch"]
