"""LoRALinear: the contract (keys, init, forward formula, merge/unmerge/to_linear/wrap)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels import LoRALinear


def _layer(seed: int = 0, **kwargs) -> LoRALinear:
    torch.manual_seed(seed)
    layer = LoRALinear(12, 7, **kwargs)
    nn.init.normal_(layer.lora_B)
    return layer


def test_is_a_linear_with_base_keys_and_lora_factors() -> None:
    layer = LoRALinear(12, 7, rank=4, alpha=8.0)
    assert isinstance(layer, nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias", "lora_A", "lora_B"}
    assert layer.weight.shape == (7, 12) and layer.lora_A.shape == (4, 12) and layer.lora_B.shape == (7, 4)
    assert layer.scaling == 2.0 and not layer.merged
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    bound = 1.0 / 12**0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 12
    assert layer.lora_A.abs().max() <= bound
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))  # B = 0
    assert set(LoRALinear(4, 4, bias=False).state_dict()) == {"weight", "lora_A", "lora_B"}


def test_forward_is_base_plus_scaled_low_rank_term() -> None:
    layer = _layer(rank=3, alpha=6.0)
    x = torch.randn(2, 5, 12)
    expected = x @ layer.weight.T + layer.bias + 2.0 * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    # gradients reach every parameter through the in-place low-rank accumulation
    x.requires_grad_(True)
    layer(x).square().sum().backward()
    for p in (layer.weight, layer.bias, layer.lora_A, layer.lora_B, x):
        assert p.grad is not None and p.grad.abs().sum() > 0
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    xr = x.detach().clone().requires_grad_(True)
    (
        xr @ ref["weight"].T + ref["bias"] + 2.0 * (xr @ ref["lora_A"].T) @ ref["lora_B"].T
    ).square().sum().backward()
    for k, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, ref[k].grad)
    torch.testing.assert_close(x.grad, xr.grad)


def test_merge_unmerge_round_trip_and_to_linear() -> None:
    layer = _layer(rank=2, alpha=5.0)
    x = torch.randn(4, 12)
    before, weight0 = layer(x), layer.weight.detach().clone()
    torch.testing.assert_close(layer.delta_weight(), 2.5 * layer.lora_B @ layer.lora_A)
    linear = layer.to_linear()
    assert type(linear) is nn.Linear and not layer.merged
    torch.testing.assert_close(linear(x), before)
    layer.merge()
    layer.merge()  # idempotent
    assert layer.merged
    torch.testing.assert_close(layer(x), before)
    torch.testing.assert_close(layer.to_linear().weight, linear.weight)
    layer.unmerge()
    layer.unmerge()
    assert not layer.merged
    torch.testing.assert_close(layer.weight, weight0, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x), before)


def test_wrap_copies_an_existing_linear() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5).eval()
    base.bias.requires_grad_(False)
    layer = LoRALinear.wrap(base, rank=2, alpha=4.0, dropout=0.1)
    assert torch.equal(layer.weight, base.weight) and torch.equal(layer.bias, base.bias)
    assert layer.weight.data_ptr() != base.weight.data_ptr()
    assert not layer.training and not layer.bias.requires_grad and layer.weight.requires_grad
    assert isinstance(layer.lora_dropout, nn.Dropout) and layer.scaling == 2.0
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), base(x))


def test_dropout_applies_to_the_low_rank_input_only() -> None:
    layer = _layer(rank=2, alpha=2.0, dropout=0.5)
    x = torch.randn(64, 12)
    layer.eval()
    expected = x @ layer.weight.T + layer.bias + (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    layer.train()
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    torch.testing.assert_close(
        y, x @ layer.weight.T + layer.bias + (dropped @ layer.lora_A.T) @ layer.lora_B.T
    )


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(4, 4, rank=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(4, 4, dropout=1.0)


def test_frozen_base_trains_only_the_factors_and_autocast_works() -> None:
    layer = _layer(rank=3, alpha=3.0)
    layer.weight.requires_grad_(False)
    assert layer.bias is not None
    layer.bias.requires_grad_(False)
    x = torch.randn(2, 3, 12)  # no grad: the in-place low-rank add must still record the graph
    layer(x).square().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    assert layer.weight.grad is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), layer.to_linear()(x))
