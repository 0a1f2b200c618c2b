"""The bottleneck adapter and the adapter site against independent reference computations.

(peft's layers and the split attention: test_peft_library.py.)
"""

from __future__ import annotations

import pytest
import torch

from models.layers import AdapterSite
from models.peft.adapter import BottleneckAdapter


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
