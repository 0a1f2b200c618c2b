"""The compiled Deformable-DETR operator (torch-ms-deform-attn), the CPU path where installed,
against the independent grid_sample reference; the level-metadata check every kernel path runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kernels import ms_deform_attn_torch
from kernels.native import ms_deform_attn_native, native_available
from kernels.validate import check_levels

GRADS = ("value", "sampling_locations", "attention_weights")


def _grads(fn: Any, case: dict, grad_out: torch.Tensor) -> tuple:
    x = {k: v.detach().clone() for k, v in case.items()}
    for k in GRADS:
        x[k].requires_grad_(True)
    out = fn(**x)
    return out, torch.autograd.grad(out, [x[k] for k in GRADS], grad_out)


def test_level_checks_name_the_bad_level(make_case) -> None:
    case = make_case(lq=3, shapes=[(3, 4), (2, 2)], seed=1)  # 16 tokens
    shapes, starts = case["spatial_shapes"], case["level_start_index"]
    check_levels(shapes, starts, 16)
    with pytest.raises(ValueError, match=r"level_start_index\[1\] = 13: level 1 \(2x2\) must lie inside"):
        check_levels(shapes, torch.tensor([0, 13]), 16)
    with pytest.raises(ValueError, match=r"level_start_index\[0\] = -1"):
        check_levels(shapes, torch.tensor([-1, 12]), 16)
    with pytest.raises(ValueError, match=r"spatial_shapes\[1\] = \(0, 2\): height and width must be >= 1"):
        check_levels(torch.tensor([[3, 4], [0, 2]]), starts, 16)
    with pytest.raises(ValueError, match="level_start_index must be"):
        check_levels(shapes, starts[:1], 16)
    with pytest.raises(ValueError, match="spatial_shapes must be"):
        check_levels(shapes.view(-1), starts, 16)
    with pytest.raises(ValueError, match="integer tensor"):
        check_levels(shapes.float(), starts, 16)
    with pytest.raises(ValueError, match="inside the value tensor's 15 tokens"):
        check_levels(shapes, starts, 15)  # the same pair against another length is checked again


def test_a_remembered_pair_is_checked_again_after_an_in_place_change(make_case) -> None:
    case = make_case(lq=3, shapes=[(3, 4), (2, 2)], seed=2)
    shapes, starts = case["spatial_shapes"], case["level_start_index"]
    check_levels(shapes, starts, 16)
    check_levels(shapes, starts, 16)  # remembered
    starts[1] = 15  # bumps the version counter
    with pytest.raises(ValueError, match=r"level_start_index\[1\] = 15"):
        check_levels(shapes, starts, 16)
    starts[1] = 12
    check_levels(shapes, starts, 16)
    shapes[0, 0] = 9  # 9x4 = 36 tokens from 0
    with pytest.raises(ValueError, match=r"level_start_index\[0\] = 0: level 0 \(9x4\)"):
        check_levels(shapes, starts, 16)


@pytest.mark.skipif(not native_available("cpu"), reason="torch-ms-deform-attn is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_operator_matches_grid_sample(make_case, dtype) -> None:
    # the compiled Deformable-DETR operator is the CPU path where installed: grid_sample, written
    # independently, is its reference
    case = make_case(
        n=2, lq=13, m=3, d=5, shapes=[(4, 3), (2, 5), (1, 1)], p=3, dtype=dtype, margin=3, seed=9
    )
    grad_out = torch.randn(2, 13, 15, generator=torch.Generator().manual_seed(10), dtype=dtype)
    out_n, grads_n = _grads(ms_deform_attn_native, case, grad_out)
    out_r, grads_r = _grads(ms_deform_attn_torch, case, grad_out)
    assert out_n.dtype == dtype
    torch.testing.assert_close(out_n, out_r)
    for gn, gr in zip(grads_n, grads_r):
        torch.testing.assert_close(gn, gr)


@pytest.mark.skipif(not native_available("cpu"), reason="torch-ms-deform-attn is not installed")
def test_native_operator_mixed_dtypes_and_bad_levels(make_case) -> None:
    case = make_case(lq=6, shapes=[(3, 4), (2, 2)], seed=11)
    mixed = dict(case, value=case["value"].to(torch.bfloat16))  # autocast-style: bf16 value, fp32 rest
    out = ms_deform_attn_native(**mixed)
    assert out.dtype == torch.bfloat16
    expected = ms_deform_attn_torch(**dict(case, value=mixed["value"].float()))
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match=r"level_start_index\[1\] = 14"):
        ms_deform_attn_native(**dict(case, level_start_index=torch.tensor([0, 14])))


def test_inference_mode_metadata_is_checked_and_remembered(make_case) -> None:
    # inference tensors have no version counter (latency runs use torch.inference_mode)
    with torch.inference_mode():
        shapes, starts = torch.tensor([[3, 4], [2, 2]]), torch.tensor([0, 12])
        check_levels(shapes, starts, 16)
        check_levels(shapes, starts, 16)
        with pytest.raises(ValueError, match=r"level_start_index\[1\] = 13"):
            check_levels(shapes, torch.tensor([0, 13]), 16)
