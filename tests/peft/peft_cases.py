"""The table of method configurations the model-level PEFT tests run over, and shared checks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

PLACEMENTS = ("enc_self", "dec_self", "dec_cross")
RESIDUALS = ("kappa", "lambda", "kappa+lambda")


def _placement_subsets() -> list[tuple[str, ...]]:
    return [c for n in range(1, 4) for c in itertools.combinations(PLACEMENTS, n)]


def adapter_cases() -> list[tuple[str, dict[str, Any]]]:
    """Every placement subset x every residual; repetitions cycle through 1..4."""
    out = []
    for i, (placement, residual) in enumerate(itertools.product(_placement_subsets(), RESIDUALS)):
        reps = 1 + i % 4
        out.append(
            (
                f"adapter-{'+'.join(placement)}-{residual}-x{reps}",
                {"placement": placement, "residual": residual, "repetitions": reps},
            )
        )
    return out


LORA_CASES: list[tuple[str, dict[str, Any]]] = [
    ("lora-paper", {}),
    ("lora-r1-msda", {"rank": 1, "targets": ["msda"]}),
    ("lora-r4-qv", {"rank": 4, "alpha": 2.0, "targets": ["dec_self_qv"]}),
    (
        "lora-all-sets",
        {
            "targets": [
                "msda",
                "msda_attention_weights",
                "msda_output_proj",
                "dec_self_qv",
                "enc_ffn",
                "dec_ffn",
            ]
        },
    ),
    ("lora-dropout", {"dropout": 0.2}),
    ("lora-regex", {"targets": [r"re:.*decoder\.layers\.\d+\.(linear1|self_attn)"], "mha_slices": ["v"]}),
]

# peft's LoRA variants and sibling methods on the same target sets (method, params).
LIBRARY_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("lora-dora", "lora", {"use_dora": True}),
    ("lora-rslora-r4", "lora", {"rank": 4, "alpha": 4.0, "use_rslora": True}),
    ("lora-pissa", "lora", {"init": "pissa"}),
    (
        "lora-olora-dora-ffn",
        "lora",
        {"init": "olora", "use_dora": True, "targets": ["dec_self_qv", "dec_ffn"]},
    ),
    ("lora-gaussian-dropout", "lora", {"init": "gaussian", "dropout": 0.1}),
    ("loha", "loha", {}),
    (
        "loha-r2-all-sets",
        "loha",
        {"rank": 2, "targets": ["msda", "msda_output_proj", "dec_self_qv", "enc_ffn"]},
    ),
    ("ia3", "ia3", {}),
    (
        "ia3-ffn-regex",
        "ia3",
        {"targets": ["enc_ffn", r"re:.*decoder\.layers\.\d+\.self_attn"], "mha_slices": ["k"]},
    ),
]

LIBRARY_METHODS = ("lora", "loha", "ia3")

HEAD_CASES: list[tuple[str, dict[str, Any]]] = [("full_head", {}), ("decoder_only", {}), ("class_mask", {})]


def all_cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases = [(cid, "lora", p) for cid, p in LORA_CASES]
    cases += LIBRARY_CASES
    cases += [(cid, "adapter", p) for cid, p in adapter_cases()]
    cases += [(cid, cid, p) for cid, p in HEAD_CASES]
    return cases


def added_parameters(method: str, params: dict[str, Any], linears: list[tuple[int, int]]) -> int:
    """Parameters a peft-library method adds for adapted linears ``[(in, out), ...]``, from the
    papers: LoRA r(in + out) (+ out magnitudes with DoRA), LoHa 2 r (in + out), IA3 out."""
    r = params.get("rank", 8)
    if method == "lora":
        return sum(r * (i + o) + (o if params.get("use_dora") else 0) for i, o in linears)
    if method == "loha":
        return sum(2 * r * (i + o) for i, o in linears)
    if method == "ia3":
        return sum(o for _, o in linears)
    raise ValueError(method)


def make_trained_like(model: nn.Module, seed: int = 7) -> nn.Module:
    """Give all-zero weight matrices (upstream's init of MSDA offsets / attention weights) small
    values, as pretraining would: DoRA needs a direction in every adapted row."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def grad_vs_trainable(
    model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]
) -> tuple[set[str], set[str]]:
    """(names with requires_grad, names that received a gradient) after one backward."""
    model.zero_grad(set_to_none=True)
    loss_fn(model).backward()
    wants = {n for n, p in model.named_parameters() if p.requires_grad}
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    return wants, got


def layernorm_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [
        (f"{mn}.{pn}", p)
        for mn, m in model.named_modules()
        if isinstance(m, nn.LayerNorm | nn.GroupNorm)
        for pn, p in m.named_parameters(recurse=False)
    ]


def perturb_trainable(model: nn.Module, seed: int = 123) -> None:
    """Stand-in for training: move every trainable tensor (so artifacts carry non-trivial values)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def synthetic_sample(seed: int, size: int = 128, num_classes: int = 3) -> dict[str, Any]:
    """One detectron2-style input dict: a uint8 RGB image with two filled shapes and their instances."""
    from detectron2.structures import BitMasks, Instances

    g = torch.Generator().manual_seed(seed)
    img = torch.randint(20, 60, (3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    y0, x0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
    masks[0, y0 : y0 + size // 3, x0 : x0 + size // 4] = True
    y1, x1 = (int(v) for v in torch.randint(size // 2, size - size // 4, (2,), generator=g))
    masks[1, y1 : y1 + size // 5, x1 : x1 + size // 5] = True
    masks[0] &= ~masks[1]
    img[0][masks[0]] = 220
    img[1][masks[1]] = 200
    inst = Instances((size, size))
    inst.gt_classes = torch.tensor([0, 1 % num_classes])
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    return {"image": img, "height": size, "width": size, "instances": inst}
