"""MSDeformAttn: the LoRA-fused Triton path against the unfused torch composition."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kernels import LoRALinear, MSDeformAttn, ms_deform_attn_torch, sampling_locations_torch


def _module(d_model: int, levels: int, heads: int, points: int, lora: str, seed: int) -> MSDeformAttn:
    torch.manual_seed(seed)
    mod = MSDeformAttn(d_model=d_model, n_levels=levels, n_heads=heads, n_points=points)
    # non-trivial weights everywhere (the upstream init zeroes the offset and attention weights)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    if lora in ("offsets", "both"):
        mod.sampling_offsets = LoRALinear.wrap(mod.sampling_offsets, rank=4, alpha=8.0)
    if lora in ("value", "both"):
        mod.value_proj = LoRALinear.wrap(mod.value_proj, rank=3, alpha=3.0)
    for sub in mod.modules():
        if isinstance(sub, LoRALinear):
            nn.init.normal_(sub.lora_B, std=0.5)  # zero-init B would hide the LoRA term
    return mod


def _inputs(n: int, lq: int, d_model: int, shapes: list[tuple[int, int]], ref_dim: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial[:, 0] * spatial[:, 1]
    s = int(sizes.sum())
    ref = torch.rand(n, lq, len(shapes), ref_dim, generator=gen)
    if ref_dim == 4:
        ref[..., 2:] = ref[..., 2:] * 0.5 + 0.05
    pad = torch.zeros(n, s, dtype=torch.bool)
    pad[-1, -3:] = True
    return {
        "query": torch.randn(n, lq, d_model, generator=gen),
        "reference_points": ref,
        "input_flatten": torch.randn(n, s, d_model, generator=gen),
        "input_spatial_shapes": spatial,
        "input_level_start_index": torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
        "input_padding_mask": pad,
    }


def _forward_backward(mod: nn.Module, inputs: dict, device: torch.device) -> tuple[torch.Tensor, dict]:
    mod = mod.to(device)
    x = {k: v.to(device) for k, v in inputs.items()}
    for k in ("query", "reference_points", "input_flatten"):
        x[k] = x[k].clone().requires_grad_(True)
    mod.zero_grad()
    out = mod(**x)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(device)
    out.backward(grad_out)
    grads = {f"param:{k}": p.grad.detach().cpu() for k, p in mod.named_parameters() if p.grad is not None}
    grads.update(
        {f"input:{k}": x[k].grad.detach().cpu() for k in ("query", "reference_points", "input_flatten")}
    )
    return out.detach().cpu(), grads


@pytest.mark.parametrize(
    ("lora", "ref_dim", "levels", "points"),
    [("none", 2, 2, 2), ("offsets", 2, 3, 4), ("offsets", 4, 2, 3), ("value", 2, 1, 5), ("both", 4, 4, 2)],
)
def test_fused_triton_module_matches_unfused_torch_composition(triton_device, lora, ref_dim, levels, points):
    shapes = [(5, 3), (3, 4), (2, 1), (1, 3)][:levels]
    mod = _module(d_model=32, levels=levels, heads=2, points=points, lora=lora, seed=levels)
    inputs = _inputs(n=2, lq=11, d_model=32, shapes=shapes, ref_dim=ref_dim, seed=points)
    fused = copy.deepcopy(mod)
    fused.backend = "triton"
    mod.backend = "torch"
    # the reference on the same device: dropout masks come from that device's generator
    out_r, grads_r = _forward_backward(mod, inputs, triton_device)
    out_t, grads_t = _forward_backward(fused, inputs, triton_device)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert grads_t.keys() == grads_r.keys()
    expected_lora = {"offsets": 2, "value": 2, "both": 4, "none": 0}[lora]
    assert sum("lora_" in k for k in grads_r) == expected_lora
    for k in grads_r:
        torch.testing.assert_close(
            grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k} differs"
        )


def test_unfused_module_equals_the_functional_composition() -> None:
    # the torch path of the module is exactly: projections -> locations -> reference MSDA -> output_proj
    mod = _module(d_model=16, levels=2, heads=2, points=3, lora="both", seed=0)
    x = _inputs(n=1, lq=4, d_model=16, shapes=[(3, 3), (2, 2)], ref_dim=2, seed=0)
    value = mod.value_proj(x["input_flatten"]).masked_fill(x["input_padding_mask"][..., None], 0.0)
    value = value.view(1, 13, 2, 8)
    offsets = mod.sampling_offsets(x["query"]).view(1, 4, 2, 2, 3, 2)
    weights = mod.attention_weights(x["query"]).view(1, 4, 2, 6).softmax(-1).view(1, 4, 2, 2, 3)
    locs = sampling_locations_torch(x["reference_points"], offsets, x["input_spatial_shapes"], 3)
    expected = mod.output_proj(
        ms_deform_attn_torch(value, x["input_spatial_shapes"], x["input_level_start_index"], locs, weights)
    )
    mod.backend = "torch"
    torch.testing.assert_close(mod(**x), expected)


def test_fused_path_never_runs_the_offset_projection(triton_device) -> None:
    mod = _module(d_model=16, levels=2, heads=2, points=2, lora="offsets", seed=1).to(triton_device)
    mod.backend = "triton"
    calls: list[int] = []
    mod.sampling_offsets.register_forward_hook(lambda *_: calls.append(1))
    x = {k: v.to(triton_device) for k, v in _inputs(1, 5, 16, [(3, 3), (2, 2)], 2, seed=1).items()}
    mod(**x)
    assert calls == []  # offsets/locations were computed inside the kernel
    mod.backend = "torch"
    mod(**x)
    assert calls == [1]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_merged_lora_equals_unmerged(triton_device, backend) -> None:
    device = torch.device("cpu") if backend == "torch" else triton_device
    mod = _module(d_model=32, levels=2, heads=4, points=2, lora="both", seed=3).to(device)
    mod.backend = backend
    x = {k: v.to(device) for k, v in _inputs(2, 6, 32, [(3, 5), (2, 2)], 4, seed=3).items()}
    with torch.no_grad():
        unmerged = mod(**x)
        for sub in mod.modules():
            if isinstance(sub, LoRALinear):
                sub.merge()
        merged = mod(**x)
        for sub in (mod.sampling_offsets, mod.value_proj):
            assert isinstance(sub, LoRALinear)
            sub.lora_B.zero_()  # a merged layer must not read its LoRA factors any more
        merged_again = mod(**x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert torch.equal(merged, merged_again)


def test_module_rejects_bad_reference_points() -> None:
    mod = _module(d_model=16, levels=1, heads=2, points=1, lora="none", seed=0)
    x = _inputs(1, 2, 16, [(2, 2)], 2, seed=0)
    x["reference_points"] = torch.rand(1, 2, 1, 3)
    with pytest.raises(ValueError, match="reference_points"):
        mod(**x)


@pytest.mark.gpu
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_cuda_fused_module_matches_torch_at_mask_dino_like_shape(ref_dim) -> None:
    shapes = [(32, 32), (16, 16), (8, 8), (4, 4)]
    mod = _module(d_model=256, levels=4, heads=8, points=4, lora="both", seed=0)
    inputs = _inputs(n=2, lq=300, d_model=256, shapes=shapes, ref_dim=ref_dim, seed=0)
    fused = copy.deepcopy(mod)
    fused.backend = "triton"
    mod.backend = "torch"
    out_r, grads_r = _forward_backward(mod, inputs, torch.device("cuda"))
    out_t, grads_t = _forward_backward(fused, inputs, torch.device("cuda"))
    torch.testing.assert_close(out_t, out_r, rtol=1e-4, atol=1e-4)
    for k in grads_r:
        # relative L2 error: with ~10^5 sampling points from random offsets, a point may sit within
        # an ulp of an integer pixel coordinate, where the location gradient legitimately jumps
        err = (grads_t[k] - grads_r[k]).norm() / (grads_r[k].norm() + 1e-12)
        assert err.item() <= 1e-4, (k, err.item())


def test_frozen_base_with_lora_dropout_in_training(triton_device) -> None:
    # the PEFT setting: base weights frozen, LoRA factors trained with dropout; the fused path draws
    # the dropout masks in the same order as the unfused one, so equal seeds give equal results
    mod = _module(d_model=32, levels=2, heads=2, points=3, lora="none", seed=5)
    mod.sampling_offsets = LoRALinear.wrap(mod.sampling_offsets, rank=4, alpha=4.0, dropout=0.3)
    mod.value_proj = LoRALinear.wrap(mod.value_proj, rank=2, alpha=4.0, dropout=0.3)
    for name, p in mod.named_parameters():
        p.requires_grad_("lora_" in name)
        if name.endswith("lora_B"):
            nn.init.normal_(p, std=0.5)
    mod.train()
    inputs = _inputs(n=2, lq=7, d_model=32, shapes=[(3, 5), (2, 3)], ref_dim=2, seed=5)
    fused = copy.deepcopy(mod)
    fused.backend, mod.backend = "triton", "torch"
    torch.manual_seed(123)
    # the reference on the same device: dropout masks come from that device's generator
    out_r, grads_r = _forward_backward(mod, inputs, triton_device)
    torch.manual_seed(123)
    out_t, grads_t = _forward_backward(fused, inputs, triton_device)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert {k for k in grads_r if k.startswith("param:")} == {
        "param:sampling_offsets.lora_A",
        "param:sampling_offsets.lora_B",
        "param:value_proj.lora_A",
        "param:value_proj.lora_B",
    }
    assert grads_t.keys() == grads_r.keys()
    for k in grads_r:
        torch.testing.assert_close(
            grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k} differs"
        )


def test_fused_path_over_several_query_blocks(triton_device, monkeypatch) -> None:
    import kernels.triton_ops as ops

    monkeypatch.setattr(ops, "INTERPRETER_MAX_BLOCK_Q", 16)  # 37 queries -> 3 blocks, the last ragged
    mod = _module(d_model=48, levels=3, heads=3, points=2, lora="offsets", seed=7)
    inputs = _inputs(n=2, lq=37, d_model=48, shapes=[(4, 5), (3, 3), (1, 2)], ref_dim=4, seed=7)
    fused = copy.deepcopy(mod)
    fused.backend, mod.backend = "triton", "torch"
    # the reference on the same device: dropout masks come from that device's generator
    out_r, grads_r = _forward_backward(mod, inputs, triton_device)
    out_t, grads_t = _forward_backward(fused, inputs, triton_device)
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    for k in grads_r:
        torch.testing.assert_close(
            grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k} differs"
        )
