"""Host side of the Triton MSDA kernels: launch configuration and autograd Functions.

Two differentiable entry points:

- :func:`ms_deform_attn_triton` -- the Deformable-DETR functional interface on materialised
  sampling locations.
- :func:`ms_deform_attn_fused_triton` -- the sampling locations are computed inside the sampling
  kernel from the queries, the ``sampling_offsets`` projection (optionally with its LoRA term) and
  the reference points; the (N, Lq, M, L, P, 2) offsets/locations tensors are never materialised in
  the forward. The backward recomputes the locations in torch (one small GEMM), runs the same
  backward kernel as the functional path, and chains the location gradient through the projection
  with torch autograd (grads of q, W_off, b_off, t = dropout(q) A^T, lora_B, reference points).

Triton is imported lazily (first use), so importing :mod:`kernels` never imports Triton.
CPU tensors run only under the Triton interpreter: ``TRITON_INTERPRET=1`` set before triton is
first imported in the process (see :mod:`kernels.triton_msda`); otherwise a clear RuntimeError.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from kernels.reference import sampling_locations_torch

__all__ = [
    "check_triton_usable",
    "ms_deform_attn_fused_triton",
    "ms_deform_attn_triton",
]


def _kernels() -> Any:
    import kernels.triton_msda as mod

    return mod


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def check_triton_usable(device: torch.device) -> None:
    """Raise RuntimeError (one line, how to fix) unless the Triton kernels can run on ``device``."""
    try:
        mod = _kernels()
    except ImportError as exc:  # pragma: no cover - triton ships with the pinned torch
        raise RuntimeError(f"backend='triton' needs the triton package ({exc})") from exc
    if device.type == "cuda":
        if mod.interpreted():
            raise RuntimeError(
                "backend='triton': the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 "
                "at first use) and cannot run CUDA tensors in this process; unset it or use CPU tensors"
            )
        return
    if device.type == "cpu":
        if not (mod.interpreted() and mod.triton_language_interpreted()):
            hint = (
                "TRITON_INTERPRET=1 was set after triton was imported; set it before the first import"
                if _interpret_env()
                else "use backend='torch'/'auto', or set TRITON_INTERPRET=1 before triton is imported"
            )
            raise RuntimeError(f"backend='triton' on CPU tensors needs the Triton interpreter: {hint}")
        return
    raise RuntimeError(
        f"backend='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), got {device}"
    )


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


# Upper bound of queries per program in the interpreter (tests lower it to cover several blocks).
INTERPRETER_MAX_BLOCK_Q = 128


def _launch_config(lq: int, lp: int, d: int, kind: str, interpret: bool) -> dict[str, int]:
    """Block sizes and warps for ``kind`` in ("fwd", "fused", "bwd").

    The interpreter pays ~6-9 ms per program instance, so it gets few, big programs. On the GPU the
    (query, point, channel) tile is sized for ~8 fp32 elements per thread in the forward and ~4 in
    the backward (which holds grad_out and four corner loads at once): ptxas for sm_90 then reports
    ~95 / ~110 registers and no spills at the Mask DINO shape (L=4, P=4, D=32), where 16 elements
    per thread needed 135-255 registers and the backward spilled. The fused forward needs
    BLOCK_Q >= 16 for tl.dot, so it spreads its tile over more warps instead.
    """
    block_j = max(16, _next_pow2(lp))  # >= 16: the fused path feeds it to tl.dot as N
    block_d = _next_pow2(d)
    if interpret:
        block_q = max(16, min(_next_pow2(lq), INTERPRETER_MAX_BLOCK_Q))
        return {"BLOCK_Q": block_q, "BLOCK_J": block_j, "BLOCK_D": block_d, "num_warps": 4}
    tile = block_j * block_d
    per_thread = 4 if kind == "bwd" else 8
    block_q = 16 if kind == "fused" else max(1, (32 * 8 * per_thread) // tile)
    num_warps = max(1, min(16, (block_q * tile) // (32 * per_thread)))
    return {"BLOCK_Q": block_q, "BLOCK_J": block_j, "BLOCK_D": block_d, "num_warps": num_warps}


def _needs_int64(value: torch.Tensor) -> bool:
    """Value offsets fit int32 below 2**31 elements (the margin covers the clamped -2..W+1 corners)."""
    return value.numel() + 4 * value.shape[2] * value.shape[3] * (value.shape[1] + 4) >= 2**31


def _check_common(value: torch.Tensor, spatial_shapes: torch.Tensor, attention_weights: torch.Tensor) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if value.shape[-1] % 8 != 0:
        raise ValueError(
            f"value channels per head D must be a multiple of 8 for Triton, got {value.shape[-1]}"
        )
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got shape {tuple(spatial_shapes.shape)}")
    if attention_weights.dim() != 5:
        raise ValueError(
            f"attention_weights must be (N, Lq, M, L, P), got shape {tuple(attention_weights.shape)}"
        )
    n, _, m, _ = value.shape
    if attention_weights.shape[0] != n or attention_weights.shape[2] != m:
        raise ValueError("attention_weights batch/head dims do not match value")
    if attention_weights.shape[3] != spatial_shapes.shape[0]:
        raise ValueError("attention_weights levels do not match spatial_shapes")


def _meta(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> tuple:
    shapes = spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous()
    lsi = level_start_index.to(device=value.device, dtype=torch.int64).contiguous()
    return shapes, lsi


def _grid(n: int, lq: int, m: int, block_q: int) -> tuple[int]:
    return (n * ((lq + block_q - 1) // block_q) * m,)


def _forward(
    value: torch.Tensor,
    shapes: torch.Tensor,
    lsi: torch.Tensor,
    attw: torch.Tensor,
    lq: int,
    locs: torch.Tensor | None = None,
    fused: dict[str, Any] | None = None,
) -> torch.Tensor:
    mod = _kernels()
    n, s, m, d = value.shape
    num_levels, num_points = attw.shape[3], attw.shape[4]
    out = torch.empty((n, lq, m, d), device=value.device, dtype=value.dtype)
    if n == 0 or lq == 0:
        return out.view(n, lq, m * d)
    cfg = _launch_config(
        lq, num_levels * num_points, d, "fwd" if fused is None else "fused", mod.interpreted()
    )
    dummy = attw  # any valid pointer for arguments a constexpr branch never reads
    if fused is None:
        assert locs is not None
        q = woff = boff = t = lora_b = ref = dummy
        c = r = 1
        scaling = 0.0
        has_bias = has_lora = ref_box = False
        block_c = block_r = 16
    else:
        q, woff, boff, t, lora_b, ref = (fused[k] for k in ("q", "w", "b", "t", "lora_b", "ref"))
        c = q.shape[-1]
        has_bias, has_lora = boff is not None, t is not None
        r = t.shape[-1] if has_lora else 1
        boff = boff if has_bias else dummy
        t = t if has_lora else dummy
        lora_b = lora_b if has_lora else dummy
        ref_box = ref.shape[-1] == 4
        scaling = float(fused["scaling"])
        block_c = min(64, max(16, _next_pow2(c))) if not mod.interpreted() else max(16, _next_pow2(c))
        block_r = max(16, _next_pow2(r))
        locs = dummy
    mod.msda_fwd_kernel[_grid(n, lq, m, cfg["BLOCK_Q"])](
        value,
        shapes,
        lsi,
        attw,
        out,
        locs,
        q,
        woff,
        boff,
        t,
        lora_b,
        ref,
        scaling,
        lq,
        s,
        c,
        r,
        M=m,
        D=d,
        L=num_levels,
        P=num_points,
        FUSED=fused is not None,
        HAS_BIAS=has_bias,
        HAS_LORA=has_lora,
        REF_BOX=ref_box,
        IDX64=_needs_int64(value),
        BLOCK_Q=cfg["BLOCK_Q"],
        BLOCK_J=cfg["BLOCK_J"],
        BLOCK_D=cfg["BLOCK_D"],
        BLOCK_C=block_c,
        BLOCK_R=block_r,
        num_warps=cfg["num_warps"],
    )
    return out.view(n, lq, m * d)


def _backward(
    value: torch.Tensor,
    shapes: torch.Tensor,
    lsi: torch.Tensor,
    locs: torch.Tensor,
    attw: torch.Tensor,
    grad_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 grads of value (N,S,M,D), locations (N,Lq,M,L,P,2) and attention weights (N,Lq,M,L,P)."""
    mod = _kernels()
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points = attw.shape
    grad_value = torch.zeros(value.shape, device=value.device, dtype=torch.float32)
    grad_locs = torch.empty(locs.shape, device=value.device, dtype=torch.float32)
    grad_attw = torch.empty(attw.shape, device=value.device, dtype=torch.float32)
    if n == 0 or lq == 0:
        return grad_value, grad_locs, grad_attw
    cfg = _launch_config(lq, num_levels * num_points, d, "bwd", mod.interpreted())
    mod.msda_bwd_kernel[_grid(n, lq, m, cfg["BLOCK_Q"])](
        value,
        shapes,
        lsi,
        locs,
        attw,
        grad_out.contiguous(),
        grad_value,
        grad_locs,
        grad_attw,
        lq,
        s,
        M=m,
        D=d,
        L=num_levels,
        P=num_points,
        IDX64=_needs_int64(value),
        BLOCK_Q=cfg["BLOCK_Q"],
        BLOCK_J=cfg["BLOCK_J"],
        BLOCK_D=cfg["BLOCK_D"],
        num_warps=cfg["num_warps"],
    )
    return grad_value, grad_locs, grad_attw


class _MSDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        value: torch.Tensor,
        shapes: torch.Tensor,
        lsi: torch.Tensor,
        locs: torch.Tensor,
        attw: torch.Tensor,
    ) -> torch.Tensor:
        value, locs, attw = value.contiguous(), locs.contiguous(), attw.contiguous()
        ctx.save_for_backward(value, shapes, lsi, locs, attw)
        return _forward(value, shapes, lsi, attw, locs.shape[1], locs=locs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        value, shapes, lsi, locs, attw = ctx.saved_tensors
        gv, gl, ga = _backward(value, shapes, lsi, locs, attw, grad_out)
        return (
            gv.to(value.dtype) if ctx.needs_input_grad[0] else None,
            None,
            None,
            gl.to(locs.dtype) if ctx.needs_input_grad[3] else None,
            ga.to(attw.dtype) if ctx.needs_input_grad[4] else None,
        )


class _MSDAFusedFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        value: torch.Tensor,
        shapes: torch.Tensor,
        lsi: torch.Tensor,
        query: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        t: torch.Tensor | None,
        lora_b: torch.Tensor | None,
        scaling: float,
        ref: torch.Tensor,
        attw: torch.Tensor,
    ) -> torch.Tensor:
        value, query, weight, ref, attw = (x.contiguous() for x in (value, query, weight, ref, attw))
        bias = bias.contiguous() if bias is not None else None
        t = t.contiguous() if t is not None else None
        lora_b = lora_b.contiguous() if lora_b is not None else None
        ctx.save_for_backward(value, shapes, lsi, query, weight, bias, t, lora_b, ref, attw)
        ctx.scaling = scaling
        fused = {"q": query, "w": weight, "b": bias, "t": t, "lora_b": lora_b, "ref": ref, "scaling": scaling}
        return _forward(value, shapes, lsi, attw, query.shape[1], fused=fused)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        value, shapes, lsi, query, weight, bias, t, lora_b, ref, attw = ctx.saved_tensors
        n, lq = query.shape[:2]
        m, num_levels, num_points = attw.shape[2], attw.shape[3], attw.shape[4]
        # Recompute offsets and locations in fp32 (as the kernel did) with autograd on, so the
        # location gradient from the kernel chains into every projection input.
        slots = [3, 4, 5, 6, 7, 9]  # query, weight, bias, t, lora_b, ref in forward's argument order
        tensors = [query, weight, bias, t, lora_b, ref]
        leaves: list[torch.Tensor | None] = [
            None if x is None else x.detach().requires_grad_(ctx.needs_input_grad[i])
            for i, x in zip(slots, tensors)
        ]
        q_, w_, b_, t_, lb_, ref_ = leaves
        assert q_ is not None and w_ is not None and ref_ is not None
        with torch.enable_grad():
            offsets = F.linear(q_.float(), w_.float(), None if b_ is None else b_.float())
            if t_ is not None and lb_ is not None:
                offsets = offsets + ctx.scaling * F.linear(t_.float(), lb_.float())
            offsets = offsets.view(n, lq, m, num_levels, num_points, 2)
            locs = sampling_locations_torch(ref_.float(), offsets, shapes, num_points)
        gv, gl, ga = _backward(value, shapes, lsi, locs.detach().contiguous(), attw, grad_out)
        wanted = [x for x in leaves if x is not None and x.requires_grad]
        grads = iter(torch.autograd.grad(locs, wanted, gl) if wanted else ())
        chained = [next(grads) if x is not None and x.requires_grad else None for x in leaves]
        gq, gw, gb, gt, glb, gref = chained
        return (
            gv.to(value.dtype) if ctx.needs_input_grad[0] else None,
            None,
            None,
            gq,
            gw,
            gb,
            gt,
            glb,
            None,
            gref,
            ga.to(attw.dtype) if ctx.needs_input_grad[10] else None,
        )


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Triton MSDA on materialised locations; same contract as :func:`kernels.ms_deform_attn`."""
    check_triton_usable(value.device)
    _check_common(value, spatial_shapes, attention_weights)
    if sampling_locations.shape[:-1] != attention_weights.shape or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} must be attention_weights' shape "
            f"{tuple(attention_weights.shape)} + (2,)"
        )
    shapes, lsi = _meta(value, spatial_shapes, level_start_index)
    return _MSDAFunction.apply(value, shapes, lsi, sampling_locations, attention_weights)


def ms_deform_attn_fused_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    query: torch.Tensor,
    offset_weight: torch.Tensor,
    offset_bias: torch.Tensor | None,
    reference_points: torch.Tensor,
    attention_weights: torch.Tensor,
    lora_hidden: torch.Tensor | None = None,
    lora_b: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """MSDA whose sampling locations are computed inside the kernel.

    ``offsets = query W^T + b + scaling * lora_hidden lora_B^T`` with ``W`` (M*L*P*2, C) in the
    (head, level, point, xy) row order of Deformable DETR's ``sampling_offsets``; ``lora_hidden``
    is ``dropout(query) A^T`` (N, Lq, R) or None (no LoRA term, e.g. merged). Locations from
    ``reference_points`` (N, Lq, L, 2) or boxes (N, Lq, L, 4) as in :func:`sampling_locations_torch`.
    Returns (N, Lq, M*D); differentiable w.r.t. every tensor argument.
    """
    check_triton_usable(value.device)
    _check_common(value, spatial_shapes, attention_weights)
    n, lq, m, num_levels, num_points = attention_weights.shape
    if query.dim() != 3 or query.shape[:2] != (n, lq):
        raise ValueError(f"query must be (N, Lq, C) = ({n}, {lq}, C), got {tuple(query.shape)}")
    if offset_weight.shape != (m * num_levels * num_points * 2, query.shape[-1]):
        raise ValueError(f"offset weight {tuple(offset_weight.shape)} does not match M*L*P*2 x C")
    if reference_points.shape[:3] != (n, lq, num_levels) or reference_points.shape[-1] not in (2, 4):
        raise ValueError(f"reference_points must be (N, Lq, L, 2|4), got {tuple(reference_points.shape)}")
    if (lora_hidden is None) != (lora_b is None):
        raise ValueError("lora_hidden and lora_b go together")
    shapes, lsi = _meta(value, spatial_shapes, level_start_index)
    return _MSDAFusedFunction.apply(
        value,
        shapes,
        lsi,
        query,
        offset_weight,
        offset_bias,
        lora_hidden,
        lora_b,
        float(scaling),
        reference_points,
        attention_weights,
    )
