"""LoRA layers and the adapter site against independent reference computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.layers import AdapterSite
from models.peft.adapter import BottleneckAdapter
from models.peft.lora import LoRAMultiheadAttention

E, H = 12, 3


def _mha(batch_first: bool) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    return nn.MultiheadAttention(E, H, batch_first=batch_first).eval()


def _inputs(batch_first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (2, 5, E) if batch_first else (5, 2, E)
    return tuple(torch.randn(*shape, generator=g) for _ in range(3))  # type: ignore[return-value]


def _randomise_b(layer: LoRAMultiheadAttention) -> None:
    with torch.no_grad():
        for p in layer.lora_B.values():
            p.normal_(0, 0.5)


@pytest.mark.parametrize("batch_first", [False, True])
def test_lora_mha_is_base_at_init_with_masks(batch_first: bool) -> None:
    base = _mha(batch_first)
    lora = LoRAMultiheadAttention.wrap(base, ("q", "v"), rank=4, alpha=8.0)
    q, k, v = _inputs(batch_first)
    attn_mask = torch.zeros(5, 5, dtype=torch.bool)
    attn_mask[0, 2] = True
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1, 4] = True
    for kw in ({}, {"attn_mask": attn_mask}, {"key_padding_mask": kpm}, {"need_weights": False}):
        want = base(q, k, v, **kw)
        got = lora(q, k, v, **kw)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
        if want[1] is not None:
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("slices", [("q", "v"), ("q",), ("v",), ("k",), ("q", "k", "v")])
def test_lora_mha_adapts_only_named_rows(slices: tuple[str, ...]) -> None:
    base = _mha(False)
    w0 = base.in_proj_weight.detach().clone()
    lora = LoRAMultiheadAttention.wrap(base, slices, rank=2, alpha=4.0)
    _randomise_b(lora)
    q, k, v = _inputs(False)
    out_unmerged = lora(q, k, v)[0]
    # independent reference: plain MHA whose in_proj rows carry W + (alpha/r) B A for each slice
    ref = _mha(False)
    with torch.no_grad():
        for i, s in enumerate(("q", "k", "v")):
            if s in slices:
                ref.in_proj_weight[i * E : (i + 1) * E] += 2.0 * lora.lora_B[s] @ lora.lora_A[s]
    torch.testing.assert_close(out_unmerged, ref(q, k, v)[0], rtol=0, atol=1e-5)
    lora.merge()
    for i, s in enumerate(("q", "k", "v")):
        rows = slice(i * E, (i + 1) * E)
        same = torch.equal(lora.in_proj_weight[rows], w0[rows])
        assert same == (s not in slices), s  # untouched rows are bit-identical
    torch.testing.assert_close(lora(q, k, v)[0], out_unmerged, rtol=0, atol=1e-5)
    lora.unmerge()
    torch.testing.assert_close(lora.in_proj_weight, w0, rtol=0, atol=1e-6)
    plain = lora.to_plain()
    assert type(plain) is nn.MultiheadAttention
    assert set(plain.state_dict()) == set(base.state_dict())
    torch.testing.assert_close(plain(q, k, v)[0], out_unmerged, rtol=0, atol=1e-5)


def test_lora_mha_dropout_path_matches_weight_path() -> None:
    """With a Dropout(p=0) the input-side path runs; it must equal the weight-delta path."""
    lora = LoRAMultiheadAttention.wrap(_mha(True), ("q", "v"), rank=3, alpha=3.0, dropout=0.3)
    _randomise_b(lora)
    q, k, v = _inputs(True)
    lora.eval()
    want = lora(q, k, v)[0]
    lora.train()
    lora.lora_dropout = nn.Dropout(0.0)
    got = lora(q, k, v)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    lora.lora_dropout = nn.Dropout(0.9)
    assert not torch.allclose(lora(q, k, v)[0], want, atol=1e-3)  # dropout really acts


def test_lora_mha_grads_reach_factors() -> None:
    lora = LoRAMultiheadAttention.wrap(_mha(False), ("q", "v"), rank=2).train()
    lora.requires_grad_(False)
    for p in list(lora.lora_A.values()) + list(lora.lora_B.values()):
        p.requires_grad_(True)
    q, k, v = _inputs(False)
    lora(q, k, v)[0].square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.lora_B.values())
    assert lora.in_proj_weight.grad is None


def _adapter(d: int, seed: int) -> BottleneckAdapter:
    torch.manual_seed(seed)
    a = BottleneckAdapter(d, 4)
    with torch.no_grad():
        a.up.weight.normal_(0, 0.3)
        a.up.bias.normal_(0, 0.3)
    return a


@pytest.mark.parametrize("residual", ["kappa", "lambda", "kappa+lambda"])
@pytest.mark.parametrize("reps", [1, 2, 4])
def test_adapter_site_composition(residual: str, reps: int) -> None:
    d = 8
    site = AdapterSite(residual)
    adapters = [_adapter(d, i) for i in range(reps)]
    site.adapters.extend(adapters)
    g = torch.Generator().manual_seed(0)
    out, inp = torch.randn(3, d, generator=g), torch.randn(3, d, generator=g)
    h = {"kappa": inp, "lambda": out, "kappa+lambda": inp + out}[residual]
    total = torch.zeros_like(out)
    for a in adapters:  # reference written from the docstring's definition
        delta = a.up(torch.relu(a.down(h)))
        total = total + delta
        h = h + delta
    torch.testing.assert_close(site(out, inp), out + total, rtol=0, atol=1e-6)


@pytest.mark.parametrize("residual", ["kappa", "lambda", "kappa+lambda"])
def test_adapter_site_is_exact_identity_at_init(residual: str) -> None:
    site = AdapterSite(residual)
    site.adapters.extend(BottleneckAdapter(8, 2) for _ in range(3))
    out, inp = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(site(out, inp), out)
    empty = AdapterSite(residual)
    assert empty(out, inp) is out and not list(empty.state_dict())


def test_bottleneck_parameter_count() -> None:
    for d, r in [(16, 4), (256, 4), (64, 2), (12, 1)]:
        n = sum(p.numel() for p in BottleneckAdapter(d, r).parameters())
        assert n == 2 * d * (d // r) + d // r + d
    with pytest.raises(ValueError):
        BottleneckAdapter(10, 4)
