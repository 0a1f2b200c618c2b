"""Triton MSDA (interpreter on the CPU, compiled on CUDA) against the grid_sample reference."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from kernels import ms_deform_attn, ms_deform_attn_torch

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ("value", "sampling_locations", "attention_weights")

# (levels, points, channels per head): every L in 1..5 and P in 1..8, D in {8, 16, 24, 32}.
SHAPE_CASES = [
    (1, 1, 8),
    (1, 8, 24),
    (2, 3, 16),
    (2, 6, 8),
    (3, 5, 32),
    (4, 4, 8),
    (4, 7, 16),
    (5, 2, 24),
    (5, 8, 8),
]


def _random_levels(levels: int, seed: int) -> list[tuple[int, int]]:
    gen = torch.Generator().manual_seed(seed)
    # odd and non-square sizes, including 1-pixel-wide maps
    sizes = torch.randint(0, 5, (levels, 2), generator=gen) * 2 + 1
    return [(int(h), int(w)) for h, w in sizes]


def _run(case: dict, backend: str, grad_out: torch.Tensor | None = None, upcast: bool = False):
    inputs = {k: v.detach().clone() for k, v in case.items()}
    if upcast:
        inputs = {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()}
    for k in INPUTS:
        inputs[k].requires_grad_(True)
    fn = ms_deform_attn_torch if backend == "torch" else ms_deform_attn
    kwargs: dict[str, Any] = {} if backend == "torch" else {"backend": backend}
    out = fn(**inputs, **kwargs)
    if grad_out is None:
        return out, None
    grads = torch.autograd.grad(out, [inputs[k] for k in INPUTS], grad_out.to(out.dtype))
    return out, dict(zip(INPUTS, grads))


def _named(name: str) -> Callable[[str], str]:
    return lambda msg: f"{name}: {msg}"


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, name: str) -> None:
    actual, expected = actual.float().cpu(), expected.float().cpu()
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g} (rel tol {rel})"


@pytest.mark.parametrize(("levels", "points", "d"), SHAPE_CASES)
def test_fp32_forward_and_gradients_match_reference(make_case, triton_device, levels, points, d) -> None:
    seed = levels * 10 + points
    gen = torch.Generator().manual_seed(seed)
    n, m, lq = 1 + seed % 2, 1 + seed % 3, int(torch.randint(1, 40, (1,), generator=gen))
    case = make_case(
        n=n,
        lq=lq,
        m=m,
        d=d,
        shapes=_random_levels(levels, seed),
        p=points,
        seed=seed,
        device=triton_device,
        margin=3,
    )
    grad_out = torch.randn(n, lq, m * d, generator=gen).to(triton_device)
    out_t, grads_t = _run(case, "triton", grad_out)
    out_r, grads_r = _run(case, "torch", grad_out)
    assert out_t.shape == (n, lq, m * d) and out_t.dtype == torch.float32
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        assert grads_t[k].dtype == torch.float32
        torch.testing.assert_close(grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4, msg=_named(k))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_fp32(make_case, triton_device, dtype) -> None:
    case = make_case(
        n=2, lq=17, m=2, d=16, shapes=[(5, 3), (3, 1), (2, 2)], p=3, dtype=dtype, device=triton_device, seed=7
    )
    grad_out = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(1)).to(triton_device)
    out_t, grads_t = _run(case, "triton", grad_out)
    # reference in fp32 on the same (rounded) inputs: the kernel's error is then its own rounding
    out_r, grads_r = _run(case, "torch", grad_out, upcast=True)
    assert out_t.dtype == dtype
    rel = 1e-2 if dtype == torch.float16 else 4e-2
    _assert_close(out_t, out_r, rel, "output")
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        assert grads_t[k].dtype == dtype
        _assert_close(grads_t[k], grads_r[k], rel, k)


def test_locations_far_outside_read_zeros_and_get_zero_gradient(make_case, triton_device) -> None:
    case = make_case(lq=6, shapes=[(3, 5), (1, 1)], p=2, device=triton_device, seed=3)
    locs = case["sampling_locations"]
    far = torch.tensor([-1e9, -3.0, 1.75, 2e9], device=locs.device)
    locs[..., 0] = far[torch.arange(locs[..., 0].numel()) % 4].view_as(locs[..., 0])
    grad_out = torch.ones(1, 6, 16, device=triton_device)
    out_t, grads_t = _run(case, "triton", grad_out)
    out_r, grads_r = _run(case, "torch", grad_out)
    assert torch.equal(out_t, torch.zeros_like(out_t))
    torch.testing.assert_close(out_t, out_r)
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        assert torch.isfinite(grads_t[k]).all()
        torch.testing.assert_close(grads_t[k], grads_r[k], rtol=1e-5, atol=1e-5)


def test_many_points_on_one_pixel_accumulate_value_gradient(make_case, triton_device) -> None:
    # every query samples the centre of a 1x1 map: all atomics hit the same addresses
    case = make_case(n=2, lq=33, m=2, d=8, shapes=[(1, 1)], p=4, device=triton_device, seed=5)
    case["sampling_locations"].fill_(0.5)
    grad_out = torch.randn(2, 33, 16, generator=torch.Generator().manual_seed(2)).to(triton_device)
    _, grads_t = _run(case, "triton", grad_out)
    _, grads_r = _run(case, "torch", grad_out)
    assert grads_t is not None and grads_r is not None
    torch.testing.assert_close(grads_t["value"], grads_r["value"], rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs(make_case, triton_device) -> None:
    case = make_case(lq=9, m=2, d=8, shapes=[(3, 3)], p=2, device=triton_device, seed=11)
    case["value"] = case["value"].transpose(1, 2).contiguous().transpose(1, 2)
    case["attention_weights"] = case["attention_weights"].transpose(3, 4).contiguous().transpose(3, 4)
    assert not case["value"].is_contiguous()
    out_t, _ = _run(case, "triton")
    out_r, _ = _run(case, "torch")
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_is_the_compiled_operator_else_grid_sample(make_case, monkeypatch) -> None:
    from kernels import msda
    from kernels.native import native_available

    used: list[str] = []
    for name in ("ms_deform_attn_torch", "ms_deform_attn_native"):
        real = getattr(msda, name)
        monkeypatch.setattr(msda, name, lambda *a, real=real, name=name: used.append(name) or real(*a))
    case = make_case(seed=2)
    torch.testing.assert_close(ms_deform_attn(**case, backend="auto"), ms_deform_attn_torch(**case))
    assert used == ["ms_deform_attn_native" if native_available("cpu") else "ms_deform_attn_torch"]
    assert msda.resolve_backend("auto", torch.device("cpu")) == (
        "native" if native_available("cpu") else "torch"
    )


def test_bad_arguments_raise(make_case, triton_device) -> None:
    with pytest.raises(ValueError, match="backend"):
        ms_deform_attn(**make_case(), backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 8"):
        ms_deform_attn(**make_case(d=12, device=triton_device), backend="triton")
    bad = make_case(device=triton_device)
    bad["sampling_locations"] = bad["sampling_locations"][..., :1]
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn(**bad, backend="triton")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_triton_on_cpu_without_interpreter_is_a_clear_error() -> None:
    code = (
        "import torch, kernels\n"
        "v = torch.zeros(1, 4, 1, 8); s = torch.tensor([[2, 2]]); i = torch.tensor([0])\n"
        "loc = torch.zeros(1, 3, 1, 1, 1, 2); w = torch.ones(1, 3, 1, 1, 1)\n"
        "try:\n"
        "    kernels.ms_deform_attn(v, s, i, loc, w, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
        "print('auto', kernels.ms_deform_attn(v, s, i, loc, w).shape)\n"
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "try:\n"
        "    kernels.ms_deform_attn(v, s, i, loc, w, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('LATE', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERR backend='triton' on CPU tensors needs the Triton interpreter" in proc.stdout
    assert "TRITON_INTERPRET=1 before triton is imported" in proc.stdout
    assert "auto torch.Size([1, 3, 8])" in proc.stdout
    assert (
        "LATE backend='triton' on CPU tensors needs the Triton interpreter: TRITON_INTERPRET=1 was set after"
        in (proc.stdout)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lq", [300, 1360])
def test_cuda_matches_reference_at_mask_dino_like_shape(make_case, dtype, lq) -> None:
    # Mask DINO R50 at 256x256 input: strides 8..64 -> 32x32, 16x16, 8x8, 4x4 (1360 tokens);
    # 8 heads x 32 channels, 4 points; decoder 300 queries, encoder queries = tokens.
    case = make_case(
        n=2,
        lq=lq,
        m=8,
        d=32,
        shapes=[(32, 32), (16, 16), (8, 8), (4, 4)],
        p=4,
        dtype=dtype,
        device="cuda",
        seed=0,
    )
    grad_out = torch.randn(2, lq, 256, device="cuda")
    out_t, grads_t = _run(case, "triton", grad_out)
    out_r, grads_r = _run(case, "torch", grad_out, upcast=True)
    rel = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    _assert_close(out_t, out_r, rel, "output")
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        _assert_close(grads_t[k], grads_r[k], max(rel, 1e-4), k)


def test_several_query_blocks_and_a_ragged_last_block(make_case, triton_device, monkeypatch) -> None:
    import kernels.triton_ops as ops

    monkeypatch.setattr(ops, "INTERPRETER_MAX_BLOCK_Q", 16)
    case = make_case(n=2, lq=37, m=3, d=16, shapes=[(5, 7), (3, 3)], p=3, device=triton_device, seed=13)
    grad_out = torch.randn(2, 37, 48, generator=torch.Generator().manual_seed(3)).to(triton_device)
    out_t, grads_t = _run(case, "triton", grad_out)
    out_r, grads_r = _run(case, "torch", grad_out)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        torch.testing.assert_close(grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4)


def test_int64_offsets_path(make_case, triton_device, monkeypatch) -> None:
    # value tensors of 2**31+ elements switch the kernels to int64 offsets; force that path here
    import kernels.triton_ops as ops

    monkeypatch.setattr(ops, "_needs_int64", lambda value: True)
    case = make_case(n=2, lq=9, m=2, d=8, shapes=[(3, 5), (2, 2)], p=3, device=triton_device, seed=17)
    grad_out = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(4)).to(triton_device)
    out_t, grads_t = _run(case, "triton", grad_out)
    out_r, grads_r = _run(case, "torch", grad_out)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert grads_t is not None and grads_r is not None
    for k in INPUTS:
        torch.testing.assert_close(grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills_with_vector_loads(tmp_path) -> None:
    # the interpreter does not compile: lower every kernel variant to an H100 cubin with the GPU
    # launch configs (Triton's bundled ptxas, no GPU needed) so GPU-only compile errors fail here;
    # the value gathers must be 16-byte vector loads (one lane per channel before the hint)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("aot_compile_sm90.py"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 9
    for row in rows:
        assert row.get("spill_bytes", 0) == 0, row
        assert row["vector_loads"] >= 4, row  # four corners, at least one 16-byte load each
        if row["kernel"] == "bwd" and row["need_gv"]:
            assert row["vector_atomics"] >= 4, row
        if row["kernel"] == "bwd" and not row["need_gv"]:
            assert row["atomics"] == 0, row  # a frozen value: no grad-value scatter at all
