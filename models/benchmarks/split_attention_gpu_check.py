"""Device check of :class:`models.peft.split_attention.SplitAttention`'s SDPA path on CUDA.

Against the packed ``nn.MultiheadAttention`` (fp32, no autocast, as the reference): the output,
the gradient of the query and of ``out_proj.weight`` after one backward, at Mask DINO decoder
shapes (E 256, 8 heads, 300 and 900 queries) without and with the boolean self-attention mask the
decoder passes, in fp32 and under bf16 autocast (training on the GPU). Under autocast both modules
are compared with the fp32 reference and the split one must be no worse than 1.5x the packed one.
Also times fwd+bwd of each (50 steps after 5 warm-ups).

Needs only torch (the module is loaded from its file, not through ``models``, so the bare device
image without detectron2 runs it): ``python3 models/benchmarks/split_attention_gpu_check.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _split_module() -> Any:
    spec = importlib.util.spec_from_file_location("split_attention", ROOT / "models/peft/split_attention.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grads(
    m: nn.Module, x: list[torch.Tensor], mask: torch.Tensor | None, autocast: bool
) -> list[torch.Tensor]:
    """[output, d query, d out_proj.weight] of one fwd+bwd (fresh leaves, grads cloned)."""
    xs = [t.clone().requires_grad_(True) for t in x]
    m.zero_grad(set_to_none=True)
    with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
        out = m(*xs, attn_mask=mask, need_weights=False)[0]
    out.float().square().mean().backward()
    w: Any = m.out_proj.weight  # type: ignore[union-attr]
    assert xs[0].grad is not None and w.grad is not None
    return [out.detach().float(), xs[0].grad.clone(), w.grad.clone()]


def _ms(m: nn.Module, x: list[torch.Tensor], mask: torch.Tensor | None, autocast: bool) -> float:
    for _ in range(5):
        _grads(m, x, mask, autocast)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50):
        _grads(m, x, mask, autocast)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / 50 * 1e3


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b, strict=True))


def check(e: int, h: int, n: int, q: int, autocast: bool, masked: bool) -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(e, h, batch_first=True).to(dev)
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    split = _split_module().SplitAttention(copy.deepcopy(mha))
    x = [torch.randn(n, q, e, device=dev) for _ in range(3)]
    mask = None
    if masked:
        mask = torch.rand(q, q, device=dev) < 0.3
        mask[:, 0] = False  # every query keeps a key
    ref = _grads(copy.deepcopy(mha), x, mask, autocast=False)
    e_packed, e_split = _rel(_grads(mha, x, mask, autocast), ref), _rel(_grads(split, x, mask, autocast), ref)
    t_packed, t_split = _ms(mha, x, mask, autocast), _ms(split, x, mask, autocast)
    print(
        f"E{e} H{h} N{n} Q{q} autocast={autocast} mask={masked}: max rel err vs fp32 packed: "
        f"packed {e_packed:.2e} split {e_split:.2e}; fwd+bwd packed {t_packed:.3f} ms split {t_split:.3f} ms"
    )
    assert e_split < (1.5 * e_packed + 1e-3 if autocast else 1e-4), (e_split, e_packed)


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(0))
    for e, h, n, q in ((256, 8, 2, 300), (256, 8, 16, 900)):
        for autocast in (False, True):
            for masked in (False, True):
                check(e, h, n, q, autocast, masked)
    print("OK")


if __name__ == "__main__":
    main()
