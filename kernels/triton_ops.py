"""Host side of the Triton MSDA kernels: launch configuration and autograd Functions.

Two differentiable entry points:

- :func:`ms_deform_attn_triton` -- the Deformable-DETR functional interface on materialised
  sampling locations.
- :func:`ms_deform_attn_fused_triton` -- the sampling locations are computed inside the sampling
  kernel from the queries, the ``sampling_offsets`` projection (optionally with its LoRA term) and
  the reference points; the (N, Lq, M, L, P, 2) offsets/locations tensors are never materialised in
  the forward. The backward recomputes the locations in torch (one small GEMM, in place), runs the
  same backward kernel as the functional path, and chains the location gradient through the
  projection by hand (grads of q, W_off, b_off, t = dropout(q) A^T, lora_B, reference points).

Both take ``softmax=True`` to receive attention *logits*: the softmax over the ``L*P`` points of
each (query, head) then runs inside the kernels (forward and backward), as :class:`kernels.MSDeformAttn`
uses them. The value gradient is only computed (atomics) when the value needs one.

Before a launch the level metadata is checked against the value length
(:func:`kernels.validate.check_levels`): a GPU kernel would read out of bounds otherwise.

Launch configuration: on the GPU every kernel is autotuned (``triton.autotune`` over queries per
program and warps, around the hand-sized :func:`_launch_config`; keyed by the shape, the flags, the
dtypes and a power-of-two bucket of the query rows; results cached on disk by Triton).
``PEFTSWEEP_TRITON_AUTOTUNE=0`` launches the hand-sized config instead (tests on a GPU, where
tuning each of many tiny shapes would cost more than it finds). The interpreter never autotunes
(``do_bench`` needs a GPU).

Triton is imported lazily (first use), so importing :mod:`kernels` never imports Triton.
CPU tensors run only under the Triton interpreter: ``TRITON_INTERPRET=1`` set before triton is
first imported in the process (see :mod:`kernels.triton_msda`); otherwise a clear RuntimeError.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from kernels.validate import check_levels

__all__ = [
    "autotune_enabled",
    "check_triton_usable",
    "ms_deform_attn_fused_triton",
    "ms_deform_attn_triton",
    "tuned_configs",
]

AUTOTUNE_ENV = "PEFTSWEEP_TRITON_AUTOTUNE"


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
    the backward (which holds grad_out and four corner loads at once); with the vector loads ptxas
    for sm_90 reports 40-48 registers (forward), 94 (fused forward) and 40-47 (backward) at the
    Mask DINO shape (L=4, P=4, D=32), no spills (``tests/kernels/aot_compile_sm90.py``). The fused
    forward needs BLOCK_Q >= 16 for tl.dot, so it spreads its tile over more warps instead. On the
    GPU this is the autotuner's starting point (:func:`_tune_candidates`), and the config when
    autotuning is off.
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


def autotune_enabled() -> bool:
    """Whether GPU launches are autotuned (``PEFTSWEEP_TRITON_AUTOTUNE``, default on)."""
    return os.environ.get(AUTOTUNE_ENV, "1").lower() not in ("0", "false", "off", "no")


def _tune_candidates(kind: str, block_j: int, block_d: int) -> list[tuple[int, int]]:
    """(BLOCK_Q, num_warps) pairs the autotuner times: the hand-sized config and its neighbours.

    Sized by fp32 elements per thread of the (query, point, channel) tile -- 8 and 16 in the
    forward, 4 and 8 in the backward (it holds grad_out and four corners) -- over 4 and 8 warps;
    the fused forward needs BLOCK_Q >= 16 (tl.dot) and spreads over 8 or 16 warps instead. Few on
    purpose: each candidate is a compile (about a second) the first time a kernel variant runs.
    """
    tile = block_j * block_d
    hand = _launch_config(1 << 20, block_j, block_d, kind, interpret=False)  # block sizes are powers of 2
    pairs = {(hand["BLOCK_Q"], hand["num_warps"])}
    if kind == "fused":
        pairs |= {(bq, w) for bq in (16, 32) for w in (8, 16)}
    else:
        for per_thread in (4, 8) if kind == "bwd" else (8, 16):
            for warps in (4, 8):
                block_q = (32 * warps * per_thread) // tile
                if block_q >= 1 and block_q & (block_q - 1) == 0:
                    pairs.add((block_q, warps))
    return sorted(pairs)


def _tune_bench(fn: Callable[[], Any], quantiles: Any = None) -> Any:
    # shorter than Triton's default (25 ms warm-up, 100 ms timed per config): the configs differ by
    # tens of percent, and a training run meets a few dozen keys
    import triton.testing

    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


_TUNE_KEYS = {
    "fwd": ["LQ_KEY", "M", "D", "L", "P", "FUSED", "HAS_BIAS", "HAS_LORA", "REF_BOX", "SOFTMAX", "IDX64"],
    "bwd": ["LQ_KEY", "M", "D", "L", "P", "SOFTMAX", "NEED_GV", "IDX64"],
}


# (kind, BLOCK_J, BLOCK_D) -> its autotuned launcher (built on first use)
_TUNERS: dict[tuple[str, int, int], Any] = {}


def _tuned(kind: str, block_j: int, block_d: int) -> Any:
    """The autotuned launcher of ``kind``'s kernel for one (BLOCK_J, BLOCK_D) tile shape."""
    import triton

    mod = _kernels()
    kernel = mod.msda_bwd_kernel if kind == "bwd" else mod.msda_fwd_kernel
    configs = [
        triton.Config({"BLOCK_Q": bq}, num_warps=w) for bq, w in _tune_candidates(kind, block_j, block_d)
    ]
    # timings cached on disk by Triton >= 3.4 (a training run's next process does not tune again)
    cache = (
        {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    )
    return triton.autotune(
        configs=configs,
        key=_TUNE_KEYS["bwd" if kind == "bwd" else "fwd"],
        # the timed runs add into grad value again and again: zero it before each and before the
        # real run
        reset_to_zero=["gvalue_ptr"] if kind == "bwd" else None,
        do_bench=_tune_bench,
        **cache,
    )(kernel)


def tuned_configs() -> list[dict[str, Any]]:
    """Every autotuning result of this process: kernel kind, tile, key and the chosen config."""
    rows = []
    for (kind, block_j, block_d), tuner in list(_TUNERS.items()):
        for key, cfg in tuner.cache.items():
            rows.append(
                {
                    "kind": kind,
                    "BLOCK_J": block_j,
                    "BLOCK_D": block_d,
                    "key": [str(k) for k in key],
                    "BLOCK_Q": cfg.kwargs.get("BLOCK_Q"),
                    "num_warps": cfg.num_warps,
                }
            )
    return rows


def _launch(kind: str, args: tuple, meta: dict[str, Any], n: int, lq: int, m: int, interpret: bool) -> None:
    """Launch ``kind``'s kernel: autotuned on the GPU (unless turned off), hand-sized otherwise."""
    mod = _kernels()
    lp = meta["L"] * meta["P"]
    cfg = _launch_config(lq, lp, meta["D"], kind, interpret)
    meta = {**meta, "BLOCK_J": cfg["BLOCK_J"], "BLOCK_D": cfg["BLOCK_D"]}
    if interpret or not autotune_enabled():
        kernel = mod.msda_bwd_kernel if kind == "bwd" else mod.msda_fwd_kernel
        kernel[_grid(n, lq, m, cfg["BLOCK_Q"])](
            *args, **meta, BLOCK_Q=cfg["BLOCK_Q"], num_warps=cfg["num_warps"]
        )
        return
    tile = (kind, cfg["BLOCK_J"], cfg["BLOCK_D"])
    tuner = _TUNERS.get(tile)
    if tuner is None:
        tuner = _TUNERS[tile] = _tuned(*tile)

    def grid(launch: dict[str, Any]) -> tuple[int]:
        return _grid(n, lq, m, launch["BLOCK_Q"])

    tuner[grid](*args, **meta)


def _lq_key(n: int, lq: int) -> int:
    """Autotuning bucket of the query rows: a power of two >= 16 (so Triton specialises it alike)."""
    return max(16, _next_pow2(n * lq))


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
    softmax: bool,
    locs: torch.Tensor | None = None,
    fused: dict[str, Any] | None = None,
) -> torch.Tensor:
    mod = _kernels()
    n, s, m, d = value.shape
    num_levels, num_points = attw.shape[3], attw.shape[4]
    out = torch.empty((n, lq, m, d), device=value.device, dtype=value.dtype)
    if n == 0 or lq == 0:
        return out.view(n, lq, m * d)
    interpret = mod.interpreted()
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
        block_c = min(64, max(16, _next_pow2(c))) if not interpret else max(16, _next_pow2(c))
        block_r = max(16, _next_pow2(r))
        locs = dummy
    args = (value, shapes, lsi, attw, out, locs, q, woff, boff, t, lora_b, ref, scaling, lq, s, c, r)
    meta = {
        "M": m,
        "D": d,
        "L": num_levels,
        "P": num_points,
        "FUSED": fused is not None,
        "HAS_BIAS": has_bias,
        "HAS_LORA": has_lora,
        "REF_BOX": ref_box,
        "SOFTMAX": softmax,
        "IDX64": _needs_int64(value),
        "BLOCK_C": block_c,
        "BLOCK_R": block_r,
    }
    kind = "fwd" if fused is None else "fused"
    _launch(kind, (*args, _lq_key(n, lq)), meta, n, lq, m, interpret)
    return out.view(n, lq, m * d)


def _backward(
    value: torch.Tensor,
    shapes: torch.Tensor,
    lsi: torch.Tensor,
    locs: torch.Tensor,
    attw: torch.Tensor,
    grad_out: torch.Tensor,
    softmax: bool,
    need_value_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """fp32 grads of value (N,S,M,D) (None unless ``need_value_grad``), locations (N,Lq,M,L,P,2) and
    attention weights (N,Lq,M,L,P) -- of the logits with ``softmax``."""
    mod = _kernels()
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points = attw.shape
    grad_locs = torch.empty(locs.shape, device=value.device, dtype=torch.float32)
    grad_attw = torch.empty(attw.shape, device=value.device, dtype=torch.float32)
    # no value gradient wanted (a frozen value projection and input): no buffer, no atomics; the
    # kernel gets a one-element scratch pointer it never writes (and the autotuner zeroes)
    grad_value = torch.zeros(
        value.shape if need_value_grad else (1,), device=value.device, dtype=torch.float32
    )
    if n == 0 or lq == 0:
        return (grad_value if need_value_grad else None), grad_locs, grad_attw
    args = (value, shapes, lsi, locs, attw, grad_out.contiguous(), grad_value, grad_locs, grad_attw, lq, s)
    meta = {
        "M": m,
        "D": d,
        "L": num_levels,
        "P": num_points,
        "SOFTMAX": softmax,
        "NEED_GV": need_value_grad,
        "IDX64": _needs_int64(value),
    }
    _launch("bwd", (*args, _lq_key(n, lq)), meta, n, lq, m, mod.interpreted())
    return (grad_value if need_value_grad else None), grad_locs, grad_attw


class _MSDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        value: torch.Tensor,
        shapes: torch.Tensor,
        lsi: torch.Tensor,
        locs: torch.Tensor,
        attw: torch.Tensor,
        softmax: bool,
    ) -> torch.Tensor:
        value, locs, attw = value.contiguous(), locs.contiguous(), attw.contiguous()
        ctx.save_for_backward(value, shapes, lsi, locs, attw)
        ctx.softmax = softmax
        return _forward(value, shapes, lsi, attw, locs.shape[1], softmax, locs=locs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        value, shapes, lsi, locs, attw = ctx.saved_tensors
        need_gv = ctx.needs_input_grad[0]
        gv, gl, ga = _backward(value, shapes, lsi, locs, attw, grad_out, ctx.softmax, need_gv)
        return (
            gv.to(value.dtype) if gv is not None else None,
            None,
            None,
            gl.to(locs.dtype) if ctx.needs_input_grad[3] else None,
            ga.to(attw.dtype) if ctx.needs_input_grad[4] else None,
            None,
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
        softmax: bool,
    ) -> torch.Tensor:
        value, query, weight, ref, attw = (x.contiguous() for x in (value, query, weight, ref, attw))
        bias = bias.contiguous() if bias is not None else None
        t = t.contiguous() if t is not None else None
        lora_b = lora_b.contiguous() if lora_b is not None else None
        ctx.save_for_backward(value, shapes, lsi, query, weight, bias, t, lora_b, ref, attw)
        ctx.scaling, ctx.softmax = scaling, softmax
        fused = {"q": query, "w": weight, "b": bias, "t": t, "lora_b": lora_b, "ref": ref, "scaling": scaling}
        return _forward(value, shapes, lsi, attw, query.shape[1], softmax, fused=fused)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        value, shapes, lsi, query, weight, bias, t, lora_b, ref, attw = ctx.saved_tensors
        need = ctx.needs_input_grad  # value, shapes, lsi, query, weight, bias, t, lora_b, scaling, ref, attw
        proj = (query, weight, bias, t, lora_b, ctx.scaling)
        # fp32 whatever autocast says: the locations must be the kernel's
        with torch.no_grad(), torch.autocast(query.device.type, enabled=False):
            locs, kept = _fused_locations(proj, ref, shapes, attw.shape, keep_offsets=need[9])
            gv, gl, ga = _backward(value, shapes, lsi, locs, attw, grad_out, ctx.softmax, need[0])
            del locs
            gq, gw, gb, gt, glb, gref = _chain_locations(gl, kept, proj, ref, shapes, need)
        return (
            gv.to(value.dtype) if gv is not None else None,
            None,
            None,
            gq,
            gw,
            gb,
            gt,
            glb,
            None,
            gref,
            ga.to(attw.dtype) if need[10] else None,
            None,
        )


_Projection = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, float
]  # query, weight, bias, t = dropout(q) A^T, lora_B, scaling


def _level_wh(shapes: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(W, H) of each level as fp32, shaped to broadcast over (N, Lq, M, L, P, 2)."""
    return shapes.flip(-1).to(torch.float32).view(1, 1, 1, num_levels, 1, 2)


def _fused_locations(
    proj: _Projection, ref: torch.Tensor, shapes: torch.Tensor, attw_shape: torch.Size, keep_offsets: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fused forward's sampling locations (N, Lq, M, L, P, 2), recomputed in fp32.

    In place in one buffer and in the kernel's operation order (``ref + off / W``;
    ``ref_xy + off / P * wh * 0.5`` for boxes). Returns the locations and, for box references whose
    gradient is wanted, a copy of the offsets (their size gradient needs them). By hand rather than
    through autograd, which held the offsets, two intermediate sums, the locations and their
    gradient at once: in the backward that was the peak of the fused path.
    """
    query, weight, bias, t, lora_b, scaling = proj
    n, lq, c = query.shape
    m, num_levels, num_points = attw_shape[2], attw_shape[3], attw_shape[4]
    q32 = query.reshape(n * lq, c).float()
    w32 = weight.float()
    offsets = torch.addmm(bias.float(), q32, w32.t()) if bias is not None else q32 @ w32.t()
    if t is not None and lora_b is not None:
        offsets.addmm_(t.reshape(n * lq, -1).float(), lora_b.float().t(), alpha=scaling)
    offsets = offsets.view(n, lq, m, num_levels, num_points, 2)
    ref32 = ref.float()
    if ref.shape[-1] == 2:
        return offsets.div_(_level_wh(shapes, num_levels)).add_(ref32[:, :, None, :, None, :]), None
    kept = offsets.clone() if keep_offsets else None
    wh = ref32[:, :, None, :, None, 2:]
    return offsets.div_(num_points).mul_(wh).mul_(0.5).add_(ref32[:, :, None, :, None, :2]), kept


def _chain_locations(
    gl: torch.Tensor,
    kept: torch.Tensor | None,
    proj: _Projection,
    ref: torch.Tensor,
    shapes: torch.Tensor,
    need: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of query, W, b, t, lora_B and the references from the location gradient ``gl``
    (fp32, consumed in place): d loc / d off is 1 / (W, H), or wh * 0.5 / P for boxes."""
    query, weight, bias, t, lora_b, scaling = proj
    n, lq, c = query.shape
    num_levels, num_points = gl.shape[3], gl.shape[4]
    gref = None
    if ref.shape[-1] == 2:
        if need[9]:
            gref = gl.sum((2, 4)).to(ref.dtype)
        g_off = gl.div_(_level_wh(shapes, num_levels))
    else:
        wh = ref.float()[:, :, None, :, None, 2:]
        if need[9]:
            assert kept is not None
            g_wh = (gl * kept.div_(num_points)).sum((2, 4)).mul_(0.5)
            gref = torch.cat([gl.sum((2, 4)), g_wh], -1).to(ref.dtype)
        g_off = gl.mul_(wh).mul_(0.5 / num_points)
    g2 = g_off.view(n * lq, -1)
    gq = (g2 @ weight.float()).view(n, lq, c).to(query.dtype) if need[3] else None
    gw = (g2.t() @ query.reshape(n * lq, c).float()).to(weight.dtype) if need[4] else None
    gb = g2.sum(0).to(bias.dtype) if bias is not None and need[5] else None
    gt = glb = None
    if t is not None and lora_b is not None:
        if need[6]:
            gt = (g2 @ lora_b.float()).mul_(scaling).view(t.shape).to(t.dtype)
        if need[7]:
            glb = (g2.t() @ t.reshape(n * lq, -1).float()).mul_(scaling).to(lora_b.dtype)
    return gq, gw, gb, gt, glb, gref


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    softmax: bool = False,
) -> torch.Tensor:
    """Triton MSDA on materialised locations; same contract as :func:`kernels.ms_deform_attn`.

    ``softmax=True``: ``attention_weights`` are logits, normalised over the ``L*P`` points of each
    (query, head) inside the kernels (the gradient returned is the logits').
    """
    check_triton_usable(value.device)
    _check_common(value, spatial_shapes, attention_weights)
    if sampling_locations.shape[:-1] != attention_weights.shape or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} must be attention_weights' shape "
            f"{tuple(attention_weights.shape)} + (2,)"
        )
    check_levels(spatial_shapes, level_start_index, value.shape[1])
    shapes, lsi = _meta(value, spatial_shapes, level_start_index)
    return _MSDAFunction.apply(value, shapes, lsi, sampling_locations, attention_weights, bool(softmax))


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
    softmax: bool = False,
) -> torch.Tensor:
    """MSDA whose sampling locations are computed inside the kernel.

    ``offsets = query W^T + b + scaling * lora_hidden lora_B^T`` with ``W`` (M*L*P*2, C) in the
    (head, level, point, xy) row order of Deformable DETR's ``sampling_offsets``; ``lora_hidden``
    is ``dropout(query) A^T`` (N, Lq, R) or None (no LoRA term, e.g. merged). Locations from
    ``reference_points`` (N, Lq, L, 2) or boxes (N, Lq, L, 4) as in
    :func:`kernels.reference.sampling_locations_torch`.
    ``softmax=True``: ``attention_weights`` are logits (see :func:`ms_deform_attn_triton`).
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
    check_levels(spatial_shapes, level_start_index, value.shape[1])
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
        bool(softmax),
    )
