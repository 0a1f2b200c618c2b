"""SplitAttention's path without attention weights (heads straight into scaled_dot_product_attention,
no identity projections) computes what the packed ``nn.MultiheadAttention`` computes: outputs and
gradients (inputs and every projection weight), for each mask kind and both layouts; the paths it
does not take (weights asked for, ``add_zero_attn``) still go through torch's own attention."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models.peft.split_attention import SplitAttention

E, H, N, L, S = 16, 4, 3, 5, 7


def _pair(batch_first: bool, **kw: object) -> tuple[nn.MultiheadAttention, SplitAttention]:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first, **kw)  # type: ignore[arg-type]
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha, SplitAttention(copy.deepcopy(mha))


def _inputs(batch_first: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = [(N, L, E), (N, S, E), (N, S, E)] if batch_first else [(L, N, E), (S, N, E), (S, N, E)]
    return [torch.randn(*s, generator=g, requires_grad=True) for s in shapes]


def _masks() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    bool2d = torch.rand(L, S, generator=g) < 0.3
    bool2d[:, 0] = False  # every query keeps a key (no all -inf row)
    float3d = torch.randn(N * H, L, S, generator=g)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[1, 5:] = True
    return {
        "none": {},
        "bool 2-D attn_mask": {"attn_mask": bool2d},
        "float 3-D attn_mask": {"attn_mask": float3d},
        "key_padding_mask": {"key_padding_mask": kpm},
        "both": {"attn_mask": bool2d, "key_padding_mask": kpm},
    }


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", list(_masks()))
def test_fast_path_equals_packed_attention(batch_first: bool, mask: str) -> None:
    mha, split = _pair(batch_first)
    kw = _masks()[mask]
    outs, grads = [], []
    for module in (mha, split):
        x = _inputs(batch_first)
        out, weights = module(*x, need_weights=False, **kw)
        assert weights is None
        out.square().sum().backward()
        outs.append(out.detach())
        params = dict(module.named_parameters())
        packed = (
            params["in_proj_weight"].grad
            if "in_proj_weight" in params
            else torch.cat([params[f"{s}_proj.weight"].grad for s in "qkv"], 0)
        )
        grads.append([t.grad for t in x] + [packed, params["out_proj.weight"].grad])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fast_path_is_taken_and_other_calls_keep_torchs_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    mha, split = _pair(True)
    x = _inputs(True)
    calls: list[str] = []
    real = nn.functional.multi_head_attention_forward

    def spy(*a: object, **k: object) -> object:
        calls.append("torch")
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(nn.functional, "multi_head_attention_forward", spy)
    with torch.no_grad():
        split(*x, need_weights=False)
        assert calls == []  # SDPA directly
        out, weights = split(*x)  # weights asked for: torch's attention, identity projections
        want_out, want_weights = mha(*x)
    assert calls == ["torch", "torch"] and weights is not None
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, want_weights, rtol=1e-5, atol=1e-5)
    mha, split = _pair(True, add_zero_attn=True)
    with torch.no_grad():
        torch.testing.assert_close(
            split(*x, need_weights=False)[0], mha(*x, need_weights=False)[0], rtol=1e-5, atol=1e-5
        )
