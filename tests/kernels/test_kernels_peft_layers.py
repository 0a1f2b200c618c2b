"""MSDeformAttn with peft's layers on ``sampling_offsets`` / ``value_proj``.

Plain LoRA (peft's layer through the project's custom-module dispatch) runs the fused Triton path,
which reads the factors from the peft layer; variants the kernel cannot fuse (DoRA, LoHa, IA3)
compute the offsets in their own layer and only the sampling runs in Triton. Both must equal the
unfused torch composition, forward and backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import inject_adapter_in_model
from torch import nn

from kernels import MSDeformAttn
from models.peft.registry import build_method_config

PARAMS = {
    "lora": {"rank": 4, "alpha": 8.0},
    "lora_dora": {"rank": 4, "alpha": 8.0, "use_dora": True},
    "loha": {"rank": 2, "alpha": 4.0},
    "ia3": {},
}


def _module(kind: str, seed: int) -> MSDeformAttn:
    torch.manual_seed(seed)
    mod = MSDeformAttn(d_model=32, n_levels=2, n_heads=2, n_points=2)
    # non-trivial weights everywhere (the upstream init zeroes the offset and attention weights)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    method = kind.split("_")[0]
    config = build_method_config(method, **PARAMS[kind])
    inject_adapter_in_model(config.peft_config(["sampling_offsets", "value_proj"]), mod)  # type: ignore[attr-defined]
    with torch.no_grad():  # move every adapter tensor off its identity init
        for name, p in mod.named_parameters():
            if any(t in name for t in ("lora_", "hada_", "ia3_")):
                p.add_(torch.randn_like(p) * 0.3)
    for name, p in mod.named_parameters():
        p.requires_grad_(any(t in name for t in ("lora_", "hada_", "ia3_")))
    return mod


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    spatial = torch.tensor([(3, 5), (2, 3)], dtype=torch.long)
    sizes = spatial[:, 0] * spatial[:, 1]
    return {
        "query": torch.randn(2, 7, 32, generator=gen),
        "reference_points": torch.rand(2, 7, 2, 2, generator=gen),
        "input_flatten": torch.randn(2, int(sizes.sum()), 32, generator=gen),
        "input_spatial_shapes": spatial,
        "input_level_start_index": torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
    }


def _run(mod: nn.Module, inputs: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, dict]:
    mod = mod.to(device)
    x = {k: v.to(device) for k, v in inputs.items()}
    x["query"] = x["query"].clone().requires_grad_(True)
    mod.zero_grad()
    out = mod(**x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(device))
    grads = {k: p.grad.detach().cpu() for k, p in mod.named_parameters() if p.grad is not None}
    grads["query"] = x["query"].grad.detach().cpu()
    return out.detach().cpu(), grads


@pytest.mark.parametrize("kind", list(PARAMS))
def test_peft_layers_on_msda_match_the_torch_composition(triton_device: torch.device, kind: str) -> None:
    mod = _module(kind, seed=len(kind))
    inputs = _inputs(seed=3)
    fused = copy.deepcopy(mod)
    fused.backend, mod.backend = "triton", "torch"
    calls: list[int] = []
    fused.sampling_offsets.register_forward_hook(lambda *_: calls.append(1))
    out_r, grads_r = _run(mod, inputs, torch.device("cpu"))
    out_t, grads_t = _run(fused, inputs, triton_device)
    # plain LoRA: offsets computed inside the kernel from the peft layer's factors (no projection
    # call); the others run their own layer for the offsets
    assert calls == ([] if kind == "lora" else [1])
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-5)
    assert grads_t.keys() == grads_r.keys()
    assert any("sampling_offsets" in k for k in grads_r)
    for k in grads_r:
        torch.testing.assert_close(grads_t[k], grads_r[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k}")


def test_fused_kernel_reads_the_peft_factors(triton_device: torch.device) -> None:
    """Changing the peft layer's lora_B changes the fused result; merged, it no longer does."""
    mod = _module("lora", seed=1).to(triton_device)
    mod.backend = "triton"
    x = {k: v.to(triton_device) for k, v in _inputs(seed=1).items()}
    layer = mod.sampling_offsets
    with torch.no_grad():
        before = mod(**x)
        layer.lora_B["default"].weight.mul_(2.0)
        after = mod(**x)
        assert not torch.allclose(before, after, atol=1e-4)
        layer.merge()
        merged = mod(**x)
        layer.lora_B["default"].weight.zero_()  # a merged layer must not read its factors any more
        assert torch.equal(mod(**x), merged)
    torch.testing.assert_close(merged, after, rtol=1e-5, atol=1e-5)
