"""What the GPU path relies on, checked on any machine: level metadata checked before a launch, the
in-kernel softmax, the backward without value-gradient atomics, autotuning kept out of the
interpreter."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kernels import ms_deform_attn_torch
from kernels.validate import check_levels

GRADS = ("value", "sampling_locations", "attention_weights")


def _grads(fn: Any, case: dict, grad_out: torch.Tensor, leaves: tuple[str, ...] = GRADS) -> tuple:
    x = {k: v.detach().clone() for k, v in case.items()}
    for k in leaves:
        x[k].requires_grad_(True)
    out = fn(**x)
    return out, torch.autograd.grad(out, [x[k] for k in leaves], grad_out)


def test_levels_outside_the_value_tensor_are_refused_before_a_launch(make_case, triton_device) -> None:
    from kernels.triton_ops import ms_deform_attn_triton

    case = make_case(lq=3, shapes=[(3, 4), (2, 2)], device=triton_device, seed=1)  # S = 16
    bad_start = dict(case, level_start_index=torch.tensor([0, 13], device=triton_device))
    with pytest.raises(ValueError, match=r"level_start_index\[1\] = 13: level 1 \(2x2\)"):
        ms_deform_attn_triton(**bad_start)
    bad_shape = dict(case, spatial_shapes=torch.tensor([[3, 4], [0, 2]], device=triton_device))
    with pytest.raises(ValueError, match=r"spatial_shapes\[1\] = \(0, 2\)"):
        ms_deform_attn_triton(**bad_shape)
    with pytest.raises(ValueError, match="level_start_index must be"):
        ms_deform_attn_triton(**dict(case, level_start_index=case["level_start_index"][:1]))
    with pytest.raises(ValueError, match="integer tensor"):
        check_levels(case["spatial_shapes"].float(), case["level_start_index"], 16)


def test_a_checked_pair_is_checked_again_after_an_in_place_change(make_case, triton_device) -> None:
    from kernels.triton_ops import ms_deform_attn_triton

    case = make_case(lq=3, shapes=[(3, 4), (2, 2)], device=triton_device, seed=2)
    shapes, starts = case["spatial_shapes"], case["level_start_index"]
    ms_deform_attn_triton(**case)  # checked and remembered
    check_levels(shapes, starts, 16)  # remembered: no error, no host read needed
    starts[1] = 15  # in place: bumps the version counter, so the pair is checked again
    with pytest.raises(ValueError, match=r"level_start_index\[1\] = 15"):
        ms_deform_attn_triton(**case)
    with pytest.raises(ValueError, match="must lie inside the value tensor's 12 tokens"):
        check_levels(shapes, torch.tensor([0, 12]), 12)  # another value length: checked again


@pytest.mark.parametrize(("levels", "points"), [([(3, 5), (2, 3)], 3), ([(4, 4)], 4)])
def test_in_kernel_softmax_matches_softmax_then_reference(make_case, triton_device, levels, points) -> None:
    # L*P = 6 leaves padding columns in the 16-wide tile, 4*1 = 4 too: their weight must be 0
    from kernels.triton_ops import ms_deform_attn_triton

    case = make_case(n=2, lq=21, m=2, d=8, shapes=levels, p=points, device=triton_device, seed=3)
    logits = torch.randn(case["attention_weights"].shape, generator=torch.Generator().manual_seed(4)) * 3
    case["attention_weights"] = logits.to(triton_device)
    grad_out = torch.randn(2, 21, 16, generator=torch.Generator().manual_seed(5)).to(triton_device)

    def reference(attention_weights: torch.Tensor, **x: torch.Tensor) -> torch.Tensor:
        w = attention_weights.flatten(-2).softmax(-1).view_as(attention_weights)
        return ms_deform_attn_torch(attention_weights=w, **x)

    out_t, grads_t = _grads(lambda **x: ms_deform_attn_triton(**x, softmax=True), case, grad_out)
    out_r, grads_r = _grads(reference, case, grad_out)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    for name, gt, gr in zip(GRADS, grads_t, grads_r):
        torch.testing.assert_close(gt, gr, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_frozen_value_gets_no_gradient_and_no_atomics(make_case, triton_device, monkeypatch) -> None:
    import kernels.triton_ops as ops

    launches: list[dict] = []
    real = ops._launch
    monkeypatch.setattr(
        ops, "_launch", lambda kind, args, meta, *rest: launches.append(meta) or real(kind, args, meta, *rest)
    )
    case = make_case(n=2, lq=9, m=2, d=8, shapes=[(3, 5), (2, 2)], p=2, device=triton_device, seed=6)
    grad_out = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(7)).to(triton_device)
    frozen = ("sampling_locations", "attention_weights")
    _, grads_t = _grads(lambda **x: ops.ms_deform_attn_triton(**x), case, grad_out, frozen)
    _, grads_r = _grads(ms_deform_attn_torch, case, grad_out, frozen)
    for gt, gr in zip(grads_t, grads_r):
        torch.testing.assert_close(gt, gr, rtol=1e-4, atol=1e-5)
    assert [m.get("NEED_GV") for m in launches] == [None, False]  # forward, then the backward
    launches.clear()
    _grads(lambda **x: ops.ms_deform_attn_triton(**x), case, grad_out)
    assert launches[-1]["NEED_GV"] is True


def test_autotuning_candidates_and_switch(monkeypatch) -> None:
    import kernels.triton_ops as ops

    for kind in ("fwd", "fused", "bwd"):
        hand = ops._launch_config(21760, 16, 32, kind, interpret=False)
        pairs = ops._tune_candidates(kind, 16, 32)
        assert (hand["BLOCK_Q"], hand["num_warps"]) in pairs  # never worse than the hand-sized config
        assert 3 <= len(pairs) <= 8  # each costs a compile and a few timed runs on first use
        assert all(bq & (bq - 1) == 0 for bq, _ in pairs)
        if kind == "fused":
            assert min(bq for bq, _ in pairs) >= 16  # tl.dot needs 16 rows
    monkeypatch.setenv(ops.AUTOTUNE_ENV, "0")
    assert not ops.autotune_enabled()
    monkeypatch.setenv(ops.AUTOTUNE_ENV, "1")
    assert ops.autotune_enabled()


def test_the_interpreter_never_autotunes(make_case, triton_device, monkeypatch) -> None:
    import kernels.triton_ops as ops

    if triton_device.type == "cuda":
        pytest.skip("CPU interpreter behaviour")
    monkeypatch.setattr(ops, "_tuned", lambda *a: pytest.fail("autotuner built in the interpreter"))
    case = make_case(lq=4, device=triton_device, seed=8)
    torch.testing.assert_close(ops.ms_deform_attn_triton(**case), ms_deform_attn_torch(**case))
