"""The compiled Deformable-DETR operator, ``torch-ms-deform-attn`` (PyPI 0.1.1), when installed.

Why a library here: its C++ CPU operator is 3-7x faster than the grid_sample composition on the
CPU (``kernels/benchmarks/kernel_cpu_side_by_side.txt``), so it is the CPU path wherever it is
importable, and its CUDA operator is the baseline the Triton kernels are held against on a GPU
(``kernels/gpu_check.py``). It is a source distribution built against the installed torch
(``bash kernels/fetch_reference_sdist.sh --build``; ``cluster/install.sh`` runs that), so it may be
missing: :func:`native_available` says whether it can run on a device, and every caller falls
back to the grid_sample path, which stays the independent reference in tests.

Its contract: first-order gradients for value, locations and weights; float32/float64 compute
(half precision is computed in float32); int64 level metadata on the value's device. It trusts the
level metadata on CUDA, so :func:`ms_deform_attn_native` checks it first
(:func:`kernels.validate.check_levels`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from kernels.validate import check_levels

__all__ = ["ms_deform_attn_native", "native_available", "native_version"]


@functools.cache
def _module() -> Any | None:
    try:
        import torch_ms_deform_attn
    except (ImportError, OSError):  # not installed, or built against another torch (ABI)
        return None
    return torch_ms_deform_attn


def native_version() -> str | None:
    """The installed ``torch-ms-deform-attn`` version, or None when it cannot be imported."""
    mod = _module()
    return None if mod is None else str(getattr(mod, "__version__", "unknown"))


@functools.cache
def native_available(device_type: str = "cpu") -> bool:
    """True when the operator is importable and was built for ``device_type`` ("cpu" or "cuda")."""
    mod = _module()
    if mod is None:
        return False
    if device_type == "cpu":
        return True  # the CPU operator is always compiled
    if device_type == "cuda":
        return bool(getattr(mod._C, "with_cuda", False))  # CUDA only when built with the toolkit
    return False


def ms_deform_attn_native(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """MSDA through ``torch_ms_deform_attn.ms_deform_attn``; same contract as :func:`kernels.ms_deform_attn`.

    Mixed floating dtypes (bf16 values with fp32 locations under autocast, say) are computed in
    float32, which is what the operator does for half precision anyway; the output has the value's
    dtype.
    """
    mod = _module()
    if mod is None or not native_available(value.device.type):
        raise RuntimeError(
            f"backend='native' needs torch-ms-deform-attn built for {value.device.type}: "
            "run `bash kernels/fetch_reference_sdist.sh --build`"
        )
    check_levels(spatial_shapes, level_start_index, value.shape[1])
    floats = (value, sampling_locations, attention_weights)
    compute = value.dtype if len({t.dtype for t in floats}) == 1 else torch.float32
    if compute in (torch.float16, torch.bfloat16):
        compute = torch.float32
    out = mod.ms_deform_attn(
        value.to(compute),
        spatial_shapes.to(device=value.device, dtype=torch.int64),
        level_start_index.to(device=value.device, dtype=torch.int64),
        sampling_locations.to(compute),
        attention_weights.to(compute),
    )
    return out.to(value.dtype)
