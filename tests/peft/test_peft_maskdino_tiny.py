"""Every method x placement x residual on the real ``maskdino_tiny`` (Mask DINO structure, CPU size)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft_cases import all_cases, grad_vs_trainable, layernorm_params, perturb_trainable, synthetic_sample
from torch import nn

from models import build_model
from models.errors import UserError
from models.layers import AdapterSite
from models.peft import (
    apply_method,
    build_method_config,
    count_parameters,
    load_artifact,
    merge_for_inference,
    merge_lora,
    save_artifact,
    unmerge_lora,
)
from models.peft.lora import LoRALinear, LoRAMultiheadAttention

CASES = all_cases()
IDS = [c[0] for c in CASES]
CLASSES = 3


@pytest.fixture(scope="module")
def base_model() -> Any:  # MaskDINO; Any: its submodules are reached by attribute below
    torch.manual_seed(0)
    return build_model("maskdino_tiny", num_classes=CLASSES)


def _fresh(base: Any) -> Any:
    return copy.deepcopy(base)


def _flat(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}.{i}"))
    return out


def head_outputs(model: Any) -> dict[str, torch.Tensor]:
    """Raw outputs of sem_seg_head (logits, mask logits, boxes, aux) on one image, eval mode."""
    captured: dict[str, torch.Tensor] = {}
    handle = model.sem_seg_head.register_forward_hook(lambda m, i, o: captured.update(_flat(o[0])))
    model.eval()
    try:
        with torch.no_grad():
            sample = synthetic_sample(0, num_classes=CLASSES)
            del sample["instances"]
            model([sample])
    finally:
        handle.remove()
    assert captured
    return captured


def train_loss(model: nn.Module) -> torch.Tensor:
    model.train()
    losses = model([synthetic_sample(0, num_classes=CLASSES), synthetic_sample(1, num_classes=CLASSES)])
    return sum(losses.values())  # type: ignore[return-value]


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_identity_at_init(base_model: Any, cid: str, method: str, params: dict[str, Any]) -> None:
    model = _fresh(base_model)
    # same object before/after, all requires_grad off for both forwards: torch's CPU matmul picks
    # kernels by requires_grad, which would change fp32 rounding independently of the method
    model.requires_grad_(False)
    before = head_outputs(model)
    apply_method(model, build_method_config(method, **params))
    model.requires_grad_(False)
    after = head_outputs(model)
    assert before.keys() == after.keys()
    for key in before:
        if method == "lora":
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=1e-5)
        else:
            assert torch.equal(after[key], before[key]), key


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_gradients_reach_exactly_the_trainable_set(
    base_model: Any, cid: str, method: str, params: dict[str, Any]
) -> None:
    model = _fresh(base_model)
    info = apply_method(model, build_method_config(method, **params))
    wants, got = grad_vs_trainable(model, train_loss)
    assert wants and wants == got, (sorted(wants - got)[:5], sorted(got - wants)[:5])
    assert set(info.trainable_names) == wants
    if method in ("lora", "adapter"):
        assert not [n for n, p in layernorm_params(model) if p.requires_grad]
        assert not [n for n in wants if n.startswith("backbone.")]


def _lora_params(cfg: Any, params: dict[str, Any]) -> int | None:
    r = params.get("rank", 8)
    h, lv, m, p = cfg.hidden_dim, cfg.total_num_feature_levels, cfg.nheads, cfg.n_points
    msda = cfg.enc_layers + cfg.dec_layers
    per_set = {
        "msda": msda * (r * (h + m * lv * p * 2) + r * (h + h)),
        "msda_attention_weights": msda * r * (h + m * lv * p),
        "msda_output_proj": msda * r * (h + h),
        "dec_self_qv": cfg.dec_layers * 2 * r * (h + h),
        "enc_ffn": cfg.enc_layers * 2 * r * (h + cfg.enc_dim_feedforward),
        "dec_ffn": cfg.dec_layers * 2 * r * (h + cfg.dim_feedforward),
    }
    targets = params.get("targets", ["msda", "dec_self_qv"])
    if targets[0].startswith("re:"):  # decoder linear1 + the v slice of self_attn
        return cfg.dec_layers * (r * (h + cfg.dim_feedforward) + r * (h + h))
    return sum(per_set[t] for t in targets)


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_parameter_formulas(base_model: Any, cid: str, method: str, params: dict[str, Any]) -> None:
    cfg = base_model.cfg
    h = cfg.hidden_dim
    pred = base_model.sem_seg_head.predictor
    heads = sum(
        p.numel() for mod in (pred.class_embed, pred.mask_embed, pred._bbox_embed) for p in mod.parameters()
    )
    base_total = count_parameters(base_model).total
    info = apply_method(_fresh(base_model), build_method_config(method, **params))
    if method == "lora":
        added = _lora_params(cfg, params)
        assert (info.total, info.trainable) == (base_total + added, added + heads)  # type: ignore[operator]
    elif method == "adapter":
        per_placement = {"enc_self": cfg.enc_layers, "dec_self": cfg.dec_layers, "dec_cross": cfg.dec_layers}
        sites = sum(per_placement[p] for p in params["placement"])
        added = params["repetitions"] * sites * (2 * h * h // 4 + h // 4 + h)
        assert (info.total, info.trainable) == (base_total + added, added + heads)
    else:
        expect = {
            "full_head": base_total - sum(p.numel() for p in base_model.backbone.parameters()),
            "decoder_only": sum(p.numel() for p in pred.parameters()),
            "class_mask": sum(
                p.numel() for mod in (pred.class_embed, pred.mask_embed) for p in mod.parameters()
            ),
        }[method]
        assert (info.total, info.trainable) == (base_total, expect)


@pytest.mark.parametrize("params", [{}, {"targets": ["msda", "msda_output_proj", "dec_self_qv", "dec_ffn"]}])
def test_merge_equivalence(base_model: Any, params: dict[str, Any]) -> None:
    base_keys = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
    base_total = count_parameters(base_model).total
    model = _fresh(base_model)
    apply_method(model, build_method_config("lora", **params))
    before = head_outputs(model)
    perturb_trainable(model)
    want = head_outputs(model)
    # the perturbed factors really act on the forward (else equivalence below is vacuous)
    assert not torch.allclose(want[".pred_logits"], before[".pred_logits"], atol=1e-4)
    merge_lora(model)
    for key, value in head_outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)
    unmerge_lora(model)
    for key, value in head_outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)
    merge_for_inference(model)
    assert not [m for m in model.modules() if isinstance(m, LoRALinear | LoRAMultiheadAttention)]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == base_keys
    assert count_parameters(model).total == base_total
    for key, value in head_outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)
    # q and v rows moved, k rows bit-identical
    e = base_model.cfg.hidden_dim
    for i in range(base_model.cfg.dec_layers):
        key = f"sem_seg_head.predictor.decoder.layers.{i}.self_attn.in_proj_weight"
        w0, w1 = base_model.state_dict()[key], model.state_dict()[key]
        assert not torch.equal(w0[:e], w1[:e]) and not torch.equal(w0[2 * e :], w1[2 * e :])
        assert torch.equal(w0[e : 2 * e], w1[e : 2 * e])


def test_msda_lora_uses_the_fused_path(base_model: Any) -> None:
    """The kernels' MSDeformAttn sees LoRALinear on sampling_offsets/value_proj (paper recipe)."""
    model = _fresh(base_model)
    apply_method(model, build_method_config("lora"))
    msda = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn
    assert isinstance(msda.sampling_offsets, LoRALinear) and isinstance(msda.value_proj, LoRALinear)
    assert type(msda.attention_weights) is nn.Linear and type(msda.output_proj) is nn.Linear


@pytest.mark.parametrize(
    ("method", "params"), [("lora", {}), ("adapter", {"repetitions": 2}), ("decoder_only", {})]
)
def test_artifact_round_trip_and_wrong_base(
    base_model: Any, tmp_path: Path, method: str, params: dict[str, Any]
) -> None:
    config = build_method_config(method, **params)
    model = _fresh(base_model)
    apply_method(model, config, reinitialized=["sem_seg_head.predictor.label_enc"])
    perturb_trainable(model)
    want = head_outputs(model)
    path = save_artifact(model, config, tmp_path / "art", base_name="maskdino_tiny")
    fresh = _fresh(base_model)
    load_artifact(fresh, path)
    for key, value in head_outputs(fresh).items():
        assert torch.equal(value, want[key]), key
    torch.manual_seed(1)
    other = build_model("maskdino_tiny", num_classes=CLASSES)
    with pytest.raises(UserError, match="different weights"):
        load_artifact(other, path)


def test_adapter_sites_filled(base_model: Any) -> None:
    model = _fresh(base_model)
    info = apply_method(
        model, build_method_config("adapter", repetitions=3, placement=["dec_cross"], residual="kappa")
    )
    sites = {n: m for n, m in model.named_modules() if isinstance(m, AdapterSite)}
    filled = {n for n, m in sites.items() if len(m.adapters)}
    assert filled == set(info.injected) and len(filled) == base_model.cfg.dec_layers
    assert all(n.endswith("cross_attn_site") and sites[n].residual == "kappa" for n in filled)
    assert all(len(sites[n].adapters) == 3 for n in filled)
