"""Another model family plugs in by declaring its own target/site table (how SEEM will).

The toy model uses plain ``nn.MultiheadAttention`` everywhere (as SEEM does) and its own module
and placement names; nothing in models.peft is changed for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from peft_cases import grad_vs_trainable
from torch import nn

from models.errors import UserError
from models.layers import AdapterSite
from models.peft import apply_method, build_method_config, count_parameters, merge_for_inference
from models.peft.targets import _CLASS_TO_FAMILY, PEFT_SPECS, LoraTargetRule, PeftSpec, register_peft_spec

E = 16


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(E, 4, batch_first=True)
        self.self_attn_site = AdapterSite()
        self.cross_attn = nn.MultiheadAttention(E, 4, batch_first=True)
        self.cross_attn_site = AdapterSite()
        self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        out = self.self_attn_site(self.self_attn(x, x, x, need_weights=False)[0], x)
        x = self.norm1(x + out)
        out = self.cross_attn_site(self.cross_attn(x, memory, memory, need_weights=False)[0], x)
        return self.norm2(x + out)


class PlainAttnModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(5, E)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.cls = nn.Linear(E, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.backbone(x)
        q = memory[:, :4]
        for block in self.blocks:
            q = block(q, memory)
        return self.cls(q)


SPEC = PeftSpec(
    family="toy_plain_attn",
    lora_targets={
        "attn_qv": (LoraTargetRule(r"blocks\.\d+\.(self|cross)_attn", kind="mha", slices=("q", "v")),),
    },
    default_lora_targets=("attn_qv",),
    sites={"toy_self": r"blocks\.\d+\.self_attn_site", "toy_cross": r"blocks\.\d+\.cross_attn_site"},
    head_trainable=("cls",),
    baselines={
        "full_head": (r"(?!backbone(?:\.|$)).+",),
        "decoder_only": ("blocks",),
        "class_mask": ("cls",),
    },
)


@pytest.fixture
def registered() -> Iterator[None]:
    register_peft_spec(SPEC, class_names=("PlainAttnModel",))
    yield
    PEFT_SPECS.pop(SPEC.family)
    _CLASS_TO_FAMILY.pop("PlainAttnModel")


def _model() -> PlainAttnModel:
    torch.manual_seed(0)
    return PlainAttnModel().eval()


X = torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(3))


def test_unregistered_names_are_rejected() -> None:
    with pytest.raises(UserError, match="adapter.placement must be one of"):
        build_method_config("adapter", placement=["toy_self"])
    with pytest.raises(ValueError, match="no PEFT spec"):
        apply_method(_model(), build_method_config("full_head"))


def test_lora_on_plain_attention(registered: None) -> None:
    model = _model().requires_grad_(False)
    with torch.no_grad():
        before = model(X)
    info = apply_method(model, build_method_config("lora", targets=["attn_qv"], rank=2))
    # 4 attentions x (q, v): peft adapts each split projection
    assert len(info.injected) == 8 and info.trainable == 4 * 2 * 2 * (E + E) + (E * 3 + 3)
    with torch.no_grad():
        after = model.requires_grad_(False)(X)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    model = _model()
    apply_method(model, build_method_config("lora", targets=["attn_qv"], rank=2))
    wants, got = grad_vs_trainable(model, lambda m: m(X).square().sum())
    assert wants == got
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
        want = model(X)
        total = count_parameters(_model()).total
        merge_for_inference(model)
        torch.testing.assert_close(model(X), want, rtol=0, atol=1e-5)
    assert count_parameters(model).total == total


def test_adapters_at_own_placements(registered: None) -> None:
    model = _model().requires_grad_(False)
    with torch.no_grad():
        before = model(X)
    config = build_method_config("adapter", placement=["toy_cross"], residual="lambda", repetitions=2)
    info = apply_method(model, config)
    assert info.injected == ("blocks.0.cross_attn_site", "blocks.1.cross_attn_site")
    with torch.no_grad():
        assert torch.equal(model.requires_grad_(False)(X), before)
    with pytest.raises(UserError, match="not a site of model family 'maskdino'"):
        from peft_standin import make_standin

        apply_method(make_standin(0), config)
