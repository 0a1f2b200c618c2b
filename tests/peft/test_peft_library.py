"""The methods applied through the peft library, one layer at a time, against formulas written
here from the papers (not from peft's code): LoRA and its variants (rsLoRA, DoRA, PiSSA, OLoRA),
LoHa, IA3; and the split attention that lets them adapt q and v only."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from peft import inject_adapter_in_model
from torch import nn

from models.errors import UserError
from models.peft.library.inject import merge_for_inference, peft_layers
from models.peft.lora import FusedLoraLinear
from models.peft.registry import build_method_config
from models.peft.split_attention import SplitAttention, pack_split_attentions, split_attention
from models.peft.trainable import is_peft_param

IN, OUT = 12, 7


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(IN, OUT)


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        net.fc.weight.normal_(0, 0.5)
        net.fc.bias.normal_(0, 0.5)
    return net.eval()


def _adapt(method: str, **params: Any) -> tuple[Net, nn.Module, torch.Tensor, torch.Tensor]:
    """(adapted net, its peft layer, base W, base b)."""
    net = _net()
    w0, b0 = net.fc.weight.detach().clone(), net.fc.bias.detach().clone()
    config = build_method_config(method, **params)
    inject_adapter_in_model(config.peft_config(["fc"]), net)  # type: ignore[attr-defined]
    return net, net.fc, w0, b0


X = torch.randn(5, IN, generator=torch.Generator().manual_seed(1))


def _randomise(layer: nn.Module) -> None:
    """Move every adapter tensor (as training would) so the checks below are not vacuous."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if is_peft_param(name):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _check_merge(net: Net, layer: nn.Module, want: torch.Tensor) -> None:
    """merge == unmerged output; merge_for_inference leaves a plain nn.Linear with the same output."""
    with torch.no_grad():
        torch.testing.assert_close(net.fc(X), want, rtol=0, atol=1e-5)
        layer.merge()
        torch.testing.assert_close(net.fc(X), want, rtol=0, atol=1e-5)
        layer.unmerge()
        torch.testing.assert_close(net.fc(X), want, rtol=0, atol=1e-5)
        merge_for_inference(net)
        assert type(net.fc) is nn.Linear
        torch.testing.assert_close(net.fc(X), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_and_rslora_scaling(rslora: bool) -> None:
    net, layer, w0, b0 = _adapt("lora", rank=4, alpha=6.0, use_rslora=rslora)
    assert isinstance(layer, FusedLoraLinear)  # the custom-module dispatch chose the project's layer
    with torch.no_grad():
        assert torch.equal(net.fc(X), X @ w0.T + b0)  # B = 0 at init
    _randomise(layer)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    scale = 6.0 / math.sqrt(4) if rslora else 6.0 / 4
    want = X @ (w0 + scale * b @ a).T + b0
    _check_merge(net, layer, want.detach())


def test_dora_matches_weight_decomposition() -> None:
    net, layer, w0, b0 = _adapt("lora", rank=3, alpha=3.0, use_dora=True)
    with torch.no_grad():
        torch.testing.assert_close(net.fc(X), X @ w0.T + b0, rtol=0, atol=1e-6)
        m = layer.lora_magnitude_vector["default"].weight
        torch.testing.assert_close(m, w0.norm(dim=1), rtol=0, atol=1e-6)  # magnitude = ||W|| rows
    _randomise(layer)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    v = w0 + 1.0 * b @ a  # DoRA: W' = m * V / ||V||, norm per output row
    want = X @ (m[:, None] * v / v.norm(dim=1, keepdim=True)).T + b0
    _check_merge(net, layer, want.detach())


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_move_the_top_components(init: str) -> None:
    net, layer, w0, b0 = _adapt("lora", rank=3, alpha=6.0, init=init)
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    residual = layer.get_base_layer().weight.detach()
    scale = 2.0
    with torch.no_grad():
        torch.testing.assert_close(residual + scale * b @ a, w0, rtol=0, atol=1e-5)  # output unchanged
        torch.testing.assert_close(net.fc(X), X @ w0.T + b0, rtol=0, atol=1e-5)
    if init == "pissa":  # B A is the best rank-3 approximation of W: its top singular triplets
        u, s, vh = torch.linalg.svd(w0, full_matrices=False)
        torch.testing.assert_close(scale * b @ a, u[:, :3] @ torch.diag(s[:3]) @ vh[:3], rtol=0, atol=1e-5)
    else:  # OLoRA: B = the first 3 columns of Q, A = the first 3 rows of R, W = Q R
        q, r = torch.linalg.qr(w0)
        torch.testing.assert_close(b.abs(), q[:, :3].abs(), rtol=0, atol=1e-5)
        torch.testing.assert_close(b @ a, q[:, :3] @ r[:3], rtol=0, atol=1e-5)
    _randomise(layer)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = X @ (layer.get_base_layer().weight + scale * b @ a).T + b0
    _check_merge(net, layer, want.detach())


def test_loha_hadamard_product_of_low_rank_pairs() -> None:
    net, layer, w0, b0 = _adapt("loha", rank=2, alpha=4.0)
    with torch.no_grad():
        assert torch.equal(net.fc(X), X @ w0.T + b0)
    _randomise(layer)
    f = {k: getattr(layer, k)["default"] for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    delta = (f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"]) * (4.0 / 2)
    assert sum(p.numel() for p in f.values()) == 2 * 2 * (IN + OUT)
    _check_merge(net, layer, (X @ (w0 + delta).T + b0).detach())


def test_ia3_scales_the_output() -> None:
    net, layer, w0, b0 = _adapt("ia3")
    with torch.no_grad():
        assert torch.equal(net.fc(X), X @ w0.T + b0)
    _randomise(layer)
    scale = layer.ia3_l["default"].detach().reshape(-1)
    assert scale.numel() == OUT
    _check_merge(net, layer, (scale * (X @ w0.T + b0)).detach())


# ----------------------------------------------------------------------- split attention

E, H = 12, 3


def _mha_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Module()
    model.attn = nn.MultiheadAttention(E, H, batch_first=True)
    with torch.no_grad():
        model.attn.in_proj_bias.normal_()
    return model.eval()


QKV = tuple(torch.randn(2, 5, E, generator=torch.Generator().manual_seed(s)) for s in range(3))


def test_split_attention_is_the_packed_attention() -> None:
    model = _mha_model()
    packed = model.attn
    attn_mask = torch.zeros(5, 5, dtype=torch.bool)
    attn_mask[0, 2] = True
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 4] = True
    split = split_attention(model, "attn")
    assert isinstance(model.attn, SplitAttention)
    n_packed = sum(p.numel() for p in packed.parameters())
    assert sum(p.numel() for p in split.parameters()) == n_packed
    with torch.no_grad():
        for kw in ({}, {"attn_mask": attn_mask}, {"key_padding_mask": kpm}, {"need_weights": False}):
            want, got = packed(*QKV, **kw), split(*QKV, **kw)
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
            if want[1] is not None:
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)
    pack_split_attentions(model)
    assert type(model.attn) is nn.MultiheadAttention
    for key, value in packed.state_dict().items():
        assert torch.equal(model.attn.state_dict()[key], value), key


@pytest.mark.parametrize("method", ["lora", "loha", "ia3"])
def test_qv_only_adaptation_of_multihead_attention(method: str) -> None:
    """q and v adapted, k rows bit-identical after merging, the result a plain MultiheadAttention."""
    from models.peft.targets import LoraTargetRule, PeftSpec

    spec = PeftSpec("toy", {"qv": (LoraTargetRule("attn", "mha", ("q", "v")),)}, ("qv",), {}, (), {})
    model = _mha_model()
    w0 = model.attn.in_proj_weight.detach().clone()
    from models.peft.library import inject_library_method

    names = inject_library_method(model, build_method_config(method), spec)  # type: ignore[arg-type]
    assert names == ["attn.q_proj", "attn.v_proj"]
    assert [n for n, _ in peft_layers(model)] == names and type(model.attn.k_proj) is nn.Linear
    _randomise(model.attn)
    with torch.no_grad():
        want = model.attn(*QKV)[0]
        merge_for_inference(model)
        assert type(model.attn) is nn.MultiheadAttention
        torch.testing.assert_close(model.attn(*QKV)[0], want, rtol=0, atol=1e-5)
    w1 = model.attn.in_proj_weight
    assert torch.equal(w1[E : 2 * E], w0[E : 2 * E])  # k untouched
    assert not torch.equal(w1[:E], w0[:E]) and not torch.equal(w1[2 * E :], w0[2 * E :])


def test_dora_refuses_zero_rows() -> None:
    from models.peft.targets import LoraTargetRule, PeftSpec

    spec = PeftSpec("toy", {"fc": (LoraTargetRule("fc"),)}, ("fc",), {}, (), {})
    net = _net()
    with torch.no_grad():
        net.fc.weight[3].zero_()
    from models.peft.library import inject_library_method

    with pytest.raises(UserError, match=r"lora.use_dora: fc has an all-zero weight row"):
        inject_library_method(net, build_method_config("lora", use_dora=True), spec)  # type: ignore[arg-type]
