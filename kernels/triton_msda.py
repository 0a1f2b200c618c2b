"""Triton kernels for multi-scale deformable attention (forward, backward, LoRA-fused offsets).

Import this module lazily (``kernels.msda`` does): ``@triton.jit`` decides at decoration time
whether a function is compiled for the GPU or run by the Triton interpreter (``TRITON_INTERPRET=1``,
CPU tensors). That holds for this module's kernels (decorated when it is first imported) and for
Triton's own ``tl.sum`` / ``tl.cdiv`` (decorated when ``triton.language`` is first imported), so
the variable must be set before Triton is first imported in the process. :func:`interpreted`
reports how this module was built, :func:`triton_language_interpreted` how Triton was.

Layout. One program owns ``BLOCK_Q`` queries of one (batch ``n``, head ``m``) pair and all ``L*P``
sampling points of those queries as a (BLOCK_Q, BLOCK_J) tile, gathering (BLOCK_Q, BLOCK_J, BLOCK_D)
value tiles per bilinear corner and reducing over the points axis. The head index varies fastest
across program ids so the ``M`` programs that read the same query rows (fused path) run together and
share them through L2.

Numerics: every load is upcast to fp32; accumulation is fp32; the output is stored in the value
dtype. Pointers may differ in dtype (bf16 values under autocast with fp32 locations, say): each is
read as what it is. Pixel coordinates follow ``grid_sample(align_corners=False)``:
``x = loc_x * W - 0.5``. Every load and store is masked (rows past ``Lq``, points past ``L*P``,
channels past ``D``, corners outside the map): the interpreter does not catch out-of-bounds accesses.

GPU habits (none of them changes a number): value rows are gathered as vectors of channels (the
corner offsets are multiples of D, a multiple of 8, which ``tl.multiple_of`` tells the compiler:
without the hint every lane loaded one channel); with ``SOFTMAX`` the attention weights arrive as
logits and the softmax over the ``L*P`` points of a (query, head) runs in the tile, forward and
backward, so the normalised weights are never written; without ``NEED_GV`` the backward skips the
value-gradient atomics (a frozen value). ``LQ_KEY`` is unused by the code: it is the autotuner's
size bucket (``kernels.triton_ops``).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["interpreted", "msda_bwd_kernel", "msda_fwd_kernel", "triton_language_interpreted"]


def interpreted() -> bool:
    """True when this module's kernels were built for the Triton interpreter (CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(msda_fwd_kernel, InterpretedFunction)


def triton_language_interpreted() -> bool:
    """True when ``triton.language``'s jit helpers (tl.sum, tl.cdiv) were built for the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction)


@triton.jit
def _program_tile(
    Lq,
    M: tl.constexpr,
    D: tl.constexpr,
    LP: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """This program's (batch n, head m) and its tile: a block of queries x all L*P points x D channels.

    Programs are laid out head-fastest, then query block, then batch (see ``triton_ops._grid``).
    """
    pid = tl.program_id(0)
    m = pid % M
    rest = pid // M
    num_qb = tl.cdiv(Lq, BLOCK_Q)
    qb = rest % num_qb
    n = rest // num_qb
    offs_q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_j = tl.arange(0, BLOCK_J)
    offs_d = tl.arange(0, BLOCK_D)
    return n, m, offs_q, offs_j, offs_d, offs_q < Lq, offs_j < LP, offs_d < D


@triton.jit
def _level_info(shapes_ptr, lsi_ptr, offs_j, mask_j, P: tl.constexpr):
    """Per sampling point (column ``j = level * P + point``): level height, width (fp32) and start."""
    lvl = offs_j // P
    h = tl.load(shapes_ptr + lvl * 2, mask=mask_j, other=1).to(tl.float32)
    w = tl.load(shapes_ptr + lvl * 2 + 1, mask=mask_j, other=1).to(tl.float32)
    start = tl.load(lsi_ptr + lvl, mask=mask_j, other=0)
    return lvl, h, w, start


@triton.jit
def _pixel_coords(loc_x, loc_y, hf, wf):
    """align_corners=False pixel coordinates, clamped so that far-away points stay far away but finite.

    Clamping to [-2, size + 1] keeps both corners of a clamped point outside the map (so it still
    reads zeros and gets zero gradient) and keeps the int32 conversion from overflowing.
    """
    x = loc_x * wf[None, :] - 0.5
    y = loc_y * hf[None, :] - 0.5
    x = tl.minimum(tl.maximum(x, -2.0), wf[None, :] + 1.0)
    y = tl.minimum(tl.maximum(y, -2.0), hf[None, :] + 1.0)
    return x, y


@triton.jit
def _geometry(loc_x, loc_y, hf, wf, start, n, m, S, M: tl.constexpr, D: tl.constexpr, IDX64: tl.constexpr):
    """Bilinear geometry of a (BLOCK_Q, BLOCK_J) tile of sampling points.

    Returns the fractional parts (lx, ly), the element offset of channel 0 of the top-left corner
    value[n, start + y0 * W + x0, m, :], the offset step of one row (W * M * D), and which of the
    corner columns (x0, x0 + 1) and rows (y0, y0 + 1) are inside the map. Offsets are int32 unless
    the value tensor has 2**31 elements or more (IDX64): half the registers on the GPU.
    """
    x, y = _pixel_coords(loc_x, loc_y, hf, wf)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    lx = x - x0f
    ly = y - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    w_i = wf.to(tl.int32)[None, :]
    h_i = hf.to(tl.int32)[None, :]
    vx0 = (x0 >= 0) & (x0 < w_i)
    vx1 = (x0 >= -1) & (x0 < w_i - 1)
    vy0 = (y0 >= 0) & (y0 < h_i)
    vy1 = (y0 >= -1) & (y0 < h_i - 1)
    if IDX64:
        token = start.to(tl.int64)[None, :] + y0.to(tl.int64) * w_i + x0
        base = ((n.to(tl.int64) * S + token) * M + m) * D
    else:
        token = start.to(tl.int32)[None, :] + y0 * w_i + x0
        base = ((n * S + token) * M + m) * D
    return lx, ly, base, w_i * (M * D), vx0, vx1, vy0, vy1


@triton.jit
def _corner_offsets(off, valid):
    """Masked-off lanes keep an in-range address; every offset is a multiple of D (a multiple of 8).

    The hint lets the compiler load 16 bytes of channels per lane (ld.global.v4) instead of one
    channel per lane: its own analysis loses the divisibility through the bilinear index algebra.
    """
    return tl.multiple_of(tl.where(valid, off, 0), [1, 8])


@triton.jit
def _attention(attw_ptr, pt_off, mask_qj, mask_j, SOFTMAX: tl.constexpr):
    """Attention weights of a (BLOCK_Q, BLOCK_J) tile in fp32; with SOFTMAX the input holds logits
    and the softmax over the row's L*P points is taken here (padding columns weigh 0)."""
    a = tl.load(attw_ptr + pt_off, mask=mask_qj, other=0.0).to(tl.float32)
    if SOFTMAX:
        a = tl.where(mask_j[None, :], a, float("-inf"))
        a = tl.exp(a - tl.max(a, axis=1)[:, None])
        a = a / tl.sum(a, axis=1)[:, None]
    return a


@triton.jit
def _fwd_corner(acc, value_ptr, off, valid, cw, d3, md3):
    """acc += cw * value at one bilinear corner; corners outside the map (not valid) read nothing."""
    off = _corner_offsets(off, valid)
    v = tl.load(value_ptr + off[:, :, None] + d3, mask=valid[:, :, None] & md3, other=0.0).to(tl.float32)
    return acc + cw[:, :, None] * v


@triton.jit
def msda_fwd_kernel(
    value_ptr,  # (N, S, M, D)
    shapes_ptr,  # (L, 2) int64 (H, W)
    lsi_ptr,  # (L,) int64
    attw_ptr,  # (N, Lq, M, L, P) weights, or logits with SOFTMAX
    out_ptr,  # (N, Lq, M, D)
    loc_ptr,  # (N, Lq, M, L, P, 2) (x, y); unused when FUSED
    q_ptr,  # (N, Lq, C) queries; FUSED only
    woff_ptr,  # (M*L*P*2, C) sampling_offsets weight; FUSED only
    boff_ptr,  # (M*L*P*2,) bias; FUSED and HAS_BIAS only
    t_ptr,  # (N, Lq, R) = dropout(q) A^T; HAS_LORA only
    lorab_ptr,  # (M*L*P*2, R) lora_B; HAS_LORA only
    ref_ptr,  # (N, Lq, L, 2|4) reference points or boxes; FUSED only
    scaling,  # LoRA scaling alpha / rank
    Lq,
    S,
    C,
    R,
    LQ_KEY,  # autotuning size bucket; unused by the code
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    FUSED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LORA: tl.constexpr,
    REF_BOX: tl.constexpr,
    SOFTMAX: tl.constexpr,
    IDX64: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    LP: tl.constexpr = L * P
    tile = _program_tile(Lq, M, D, LP, BLOCK_Q, BLOCK_J, BLOCK_D)
    n, m, offs_q, offs_j, offs_d, mask_q, mask_j, mask_d = tile
    mask_qj = mask_q[:, None] & mask_j[None, :]
    lvl, hf, wf, start = _level_info(shapes_ptr, lsi_ptr, offs_j, mask_j, P)
    row = (n * Lq + offs_q).to(tl.int64) * M + m  # flat (n, q, m) index

    if FUSED:
        # Offsets = q W^T + b + scaling * t B^T for this head's L*P*2 output columns, computed
        # here instead of being read back from a materialised (N, Lq, M, L, P, 2) tensor.
        qrow = (n * Lq + offs_q).to(tl.int64)
        wrow = (m * LP + offs_j) * 2  # row of the x offset in W_off; the y offset is the next row
        off_x = tl.zeros((BLOCK_Q, BLOCK_J), dtype=tl.float32)
        off_y = tl.zeros((BLOCK_Q, BLOCK_J), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            qt = tl.load(
                q_ptr + qrow[:, None] * C + offs_c[None, :], mask=mask_q[:, None] & mask_c[None, :], other=0.0
            ).to(tl.float32)
            mask_cj = mask_c[:, None] & mask_j[None, :]
            wx = tl.load(woff_ptr + wrow[None, :] * C + offs_c[:, None], mask=mask_cj, other=0.0).to(
                tl.float32
            )
            wy = tl.load(woff_ptr + (wrow[None, :] + 1) * C + offs_c[:, None], mask=mask_cj, other=0.0).to(
                tl.float32
            )
            off_x = tl.dot(qt, wx, off_x, input_precision="ieee")
            off_y = tl.dot(qt, wy, off_y, input_precision="ieee")
        if HAS_BIAS:
            off_x += tl.load(boff_ptr + wrow, mask=mask_j, other=0.0).to(tl.float32)[None, :]
            off_y += tl.load(boff_ptr + wrow + 1, mask=mask_j, other=0.0).to(tl.float32)[None, :]
        if HAS_LORA:
            offs_r = tl.arange(0, BLOCK_R)
            mask_r = offs_r < R
            tt = tl.load(
                t_ptr + qrow[:, None] * R + offs_r[None, :], mask=mask_q[:, None] & mask_r[None, :], other=0.0
            ).to(tl.float32)
            mask_rj = mask_r[:, None] & mask_j[None, :]
            bx = tl.load(lorab_ptr + wrow[None, :] * R + offs_r[:, None], mask=mask_rj, other=0.0).to(
                tl.float32
            )
            by = tl.load(lorab_ptr + (wrow[None, :] + 1) * R + offs_r[:, None], mask=mask_rj, other=0.0).to(
                tl.float32
            )
            off_x += scaling * tl.dot(tt, bx, input_precision="ieee")
            off_y += scaling * tl.dot(tt, by, input_precision="ieee")
        if REF_BOX:
            ref_off = (qrow[:, None] * L + lvl[None, :]) * 4
            rx = tl.load(ref_ptr + ref_off, mask=mask_qj, other=0.0).to(tl.float32)
            ry = tl.load(ref_ptr + ref_off + 1, mask=mask_qj, other=0.0).to(tl.float32)
            rw = tl.load(ref_ptr + ref_off + 2, mask=mask_qj, other=0.0).to(tl.float32)
            rh = tl.load(ref_ptr + ref_off + 3, mask=mask_qj, other=0.0).to(tl.float32)
            loc_x = rx + off_x / P * rw * 0.5
            loc_y = ry + off_y / P * rh * 0.5
        else:
            ref_off = (qrow[:, None] * L + lvl[None, :]) * 2
            rx = tl.load(ref_ptr + ref_off, mask=mask_qj, other=0.0).to(tl.float32)
            ry = tl.load(ref_ptr + ref_off + 1, mask=mask_qj, other=0.0).to(tl.float32)
            loc_x = rx + off_x / wf[None, :]
            loc_y = ry + off_y / hf[None, :]
    else:
        loc_off = (row[:, None] * LP + offs_j[None, :]) * 2
        loc_x = tl.load(loc_ptr + loc_off, mask=mask_qj, other=0.0).to(tl.float32)
        loc_y = tl.load(loc_ptr + loc_off + 1, mask=mask_qj, other=0.0).to(tl.float32)

    attw = _attention(attw_ptr, row[:, None] * LP + offs_j[None, :], mask_qj, mask_j, SOFTMAX)
    lx, ly, base, step_y, vx0, vx1, vy0, vy1 = _geometry(loc_x, loc_y, hf, wf, start, n, m, S, M, D, IDX64)
    hx = 1.0 - lx
    hy = 1.0 - ly
    d3 = offs_d[None, None, :]
    md3 = mask_d[None, None, :]

    acc = tl.zeros((BLOCK_Q, BLOCK_J, BLOCK_D), dtype=tl.float32)
    acc = _fwd_corner(acc, value_ptr, base, mask_qj & vy0 & vx0, attw * hy * hx, d3, md3)
    acc = _fwd_corner(acc, value_ptr, base + M * D, mask_qj & vy0 & vx1, attw * hy * lx, d3, md3)
    acc = _fwd_corner(acc, value_ptr, base + step_y, mask_qj & vy1 & vx0, attw * ly * hx, d3, md3)
    acc = _fwd_corner(acc, value_ptr, base + step_y + M * D, mask_qj & vy1 & vx1, attw * ly * lx, d3, md3)

    out = tl.sum(acc, axis=1)
    out_mask = mask_q[:, None] & mask_d[None, :]
    tl.store(out_ptr + row[:, None] * D + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _bwd_corner(value_ptr, gvalue_ptr, off, valid, cw, d3, md3, go3, NEED_GV: tl.constexpr):
    """One bilinear corner: returns sum_d(grad_out * value_corner); with NEED_GV scatters
    cw * grad_out into grad value (``cw`` already includes the attention weight)."""
    off = _corner_offsets(off, valid)
    mask3 = valid[:, :, None] & md3
    v = tl.load(value_ptr + off[:, :, None] + d3, mask=mask3, other=0.0).to(tl.float32)
    if NEED_GV:
        tl.atomic_add(gvalue_ptr + off[:, :, None] + d3, cw[:, :, None] * go3, mask=mask3, sem="relaxed")
    return tl.sum(go3 * v, axis=2)


@triton.jit
def msda_bwd_kernel(
    value_ptr,  # (N, S, M, D)
    shapes_ptr,
    lsi_ptr,
    loc_ptr,  # (N, Lq, M, L, P, 2)
    attw_ptr,  # (N, Lq, M, L, P) weights, or logits with SOFTMAX
    gout_ptr,  # (N, Lq, M, D) grad of the output
    gvalue_ptr,  # (N, S, M, D) fp32, zero-initialised, accumulated with atomics; NEED_GV only
    gloc_ptr,  # (N, Lq, M, L, P, 2) fp32
    gattw_ptr,  # (N, Lq, M, L, P) fp32: grad of the weights, or of the logits with SOFTMAX
    Lq,
    S,
    LQ_KEY,  # autotuning size bucket; unused by the code
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    SOFTMAX: tl.constexpr,
    NEED_GV: tl.constexpr,
    IDX64: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    LP: tl.constexpr = L * P
    tile = _program_tile(Lq, M, D, LP, BLOCK_Q, BLOCK_J, BLOCK_D)
    n, m, offs_q, offs_j, offs_d, mask_q, mask_j, mask_d = tile
    mask_qj = mask_q[:, None] & mask_j[None, :]
    lvl, hf, wf, start = _level_info(shapes_ptr, lsi_ptr, offs_j, mask_j, P)
    row = (n * Lq + offs_q).to(tl.int64) * M + m

    pt_off = row[:, None] * LP + offs_j[None, :]
    loc_x = tl.load(loc_ptr + pt_off * 2, mask=mask_qj, other=0.0).to(tl.float32)
    loc_y = tl.load(loc_ptr + pt_off * 2 + 1, mask=mask_qj, other=0.0).to(tl.float32)
    attw = _attention(attw_ptr, pt_off, mask_qj, mask_j, SOFTMAX)
    go = tl.load(
        gout_ptr + row[:, None] * D + offs_d[None, :], mask=mask_q[:, None] & mask_d[None, :], other=0.0
    ).to(tl.float32)
    go3 = go[:, None, :]
    d3 = offs_d[None, None, :]
    md3 = mask_d[None, None, :]

    lx, ly, base, step_y, vx0, vx1, vy0, vy1 = _geometry(loc_x, loc_y, hf, wf, start, n, m, S, M, D, IDX64)
    hx = 1.0 - lx
    hy = 1.0 - ly

    # g_ab = <grad_out, value at corner (y0 + a, x0 + b)>; the sample is sum_ab cw_ab * value_ab.
    g00 = _bwd_corner(value_ptr, gvalue_ptr, base, mask_qj & vy0 & vx0, attw * hy * hx, d3, md3, go3, NEED_GV)
    g01 = _bwd_corner(
        value_ptr, gvalue_ptr, base + M * D, mask_qj & vy0 & vx1, attw * hy * lx, d3, md3, go3, NEED_GV
    )
    g10 = _bwd_corner(
        value_ptr, gvalue_ptr, base + step_y, mask_qj & vy1 & vx0, attw * ly * hx, d3, md3, go3, NEED_GV
    )
    g11 = _bwd_corner(
        value_ptr,
        gvalue_ptr,
        base + step_y + M * D,
        mask_qj & vy1 & vx1,
        attw * ly * lx,
        d3,
        md3,
        go3,
        NEED_GV,
    )

    gattw = hy * hx * g00 + hy * lx * g01 + ly * hx * g10 + ly * lx * g11
    if SOFTMAX:
        # through the softmax of the row: d logit_j = p_j * (g_j - sum_k p_k g_k); padding p = 0
        gattw = attw * (gattw - tl.sum(attw * gattw, axis=1)[:, None])
    # d cw / d x: hx = 1 - lx so d(hx)/dx = -1, d(lx)/dx = +1; likewise for y. Chain rule through
    # x = loc_x * W - 0.5 multiplies by W (clamped points have all corners outside: gradient 0).
    dx = hy * (g01 - g00) + ly * (g11 - g10)
    dy = hx * (g10 - g00) + lx * (g11 - g01)
    tl.store(gattw_ptr + pt_off, gattw, mask=mask_qj)
    tl.store(gloc_ptr + pt_off * 2, attw * dx * wf[None, :], mask=mask_qj)
    tl.store(gloc_ptr + pt_off * 2 + 1, attw * dy * hf[None, :], mask=mask_qj)
