"""Every method x placement x residual on the real ``maskdino_tiny`` (Mask DINO structure, CPU size)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft_cases import (
    LIBRARY_METHODS,
    added_parameters,
    all_cases,
    grad_vs_trainable,
    layernorm_params,
    make_trained_like,
    perturb_trainable,
    synthetic_sample,
)
from torch import nn

from kernels.lora import fused_lora_terms
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
from models.peft.artifact import ADAPTER_WEIGHTS, FINGERPRINT_KEY, peft_model_from_artifact
from models.peft.library import peft_layers
from models.peft.lora import FusedLoraLinear
from models.peft.split_attention import SplitAttention

CASES = all_cases()
IDS = [c[0] for c in CASES]
CLASSES = 3


@pytest.fixture(scope="module")
def base_model() -> Any:  # MaskDINO; Any: its submodules are reached by attribute below
    torch.manual_seed(0)
    return make_trained_like(build_model("maskdino_tiny", num_classes=CLASSES))


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
        if method in LIBRARY_METHODS:
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
    if method in (*LIBRARY_METHODS, "adapter"):
        assert not [n for n, p in layernorm_params(model) if p.requires_grad]
        assert not [n for n in wants if n.startswith("backbone.")]


def _adapted_linears(cfg: Any, params: dict[str, Any]) -> list[tuple[int, int]]:
    """(in, out) of every adapted linear (a MultiheadAttention slice counts as h -> h)."""
    h, lv, m, p = cfg.hidden_dim, cfg.total_num_feature_levels, cfg.nheads, cfg.n_points
    msda = cfg.enc_layers + cfg.dec_layers
    ffe, ffd = cfg.enc_dim_feedforward, cfg.dim_feedforward
    per_set = {
        "msda": msda * [(h, m * lv * p * 2), (h, h)],
        "msda_attention_weights": msda * [(h, m * lv * p)],
        "msda_output_proj": msda * [(h, h)],
        "dec_self_qv": cfg.dec_layers * 2 * [(h, h)],
        "enc_ffn": cfg.enc_layers * [(h, ffe), (ffe, h)],
        "dec_ffn": cfg.dec_layers * [(h, ffd), (ffd, h)],
    }
    out: list[tuple[int, int]] = []
    for t in params.get("targets", ["msda", "dec_self_qv"]):
        if t.startswith("re:.*decoder"):  # decoder linear1 and/or the named slices of self_attn
            slices = len(params.get("mha_slices", ["v"]))
            out += cfg.dec_layers * (([(h, ffd)] if "linear1" in t else []) + slices * [(h, h)])
        else:
            out += per_set[t]
    return out


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
    if method in LIBRARY_METHODS:
        added = added_parameters(method, params, _adapted_linears(cfg, params))
        assert (info.total, info.trainable) == (base_total + added, added + heads)
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


MERGE_CASES = [
    ("lora", {}),
    ("lora", {"targets": ["msda", "msda_output_proj", "dec_self_qv", "dec_ffn"]}),
    ("lora", {"use_dora": True, "use_rslora": True}),
    ("lora", {"init": "olora", "rank": 4}),
    ("loha", {"rank": 4}),
    ("ia3", {"targets": ["msda", "dec_self_qv", "enc_ffn"]}),
]


@pytest.mark.parametrize(("method", "params"), MERGE_CASES)
def test_merge_equivalence(base_model: Any, method: str, params: dict[str, Any]) -> None:
    """Merged == unmerged outputs; the deployed model has the base's keys, shapes and count."""
    base_keys = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
    base_total = count_parameters(base_model).total
    model = _fresh(base_model)
    apply_method(model, build_method_config(method, **params))
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
    assert not peft_layers(model) and not [m for m in model.modules() if isinstance(m, SplitAttention)]
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
    """peft's LoRA layer on sampling_offsets/value_proj (paper recipe) hands the fused kernel its
    factors; DoRA cannot be fused and says so (the kernel then runs the layer for the offsets)."""
    model = _fresh(base_model)
    apply_method(model, build_method_config("lora"))
    msda = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn
    assert isinstance(msda.sampling_offsets, FusedLoraLinear) and isinstance(msda.value_proj, FusedLoraLinear)
    assert type(msda.attention_weights) is nn.Linear and type(msda.output_proj) is nn.Linear
    q = torch.randn(1, 3, base_model.cfg.hidden_dim)
    terms = fused_lora_terms(msda.sampling_offsets, q)
    assert terms is not None and terms[1] is msda.sampling_offsets.lora_B["default"].weight
    dora = _fresh(base_model)
    apply_method(dora, build_method_config("lora", use_dora=True))
    msda = dora.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn
    assert fused_lora_terms(msda.sampling_offsets, q) is None


@pytest.mark.parametrize(
    ("method", "params"),
    [("lora", {}), ("adapter", {"repetitions": 2}), ("decoder_only", {}), ("lora", {"use_dora": True}),
     ("loha", {}), ("ia3", {})],
)  # fmt: skip
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
    other = make_trained_like(build_model("maskdino_tiny", num_classes=CLASSES))
    with pytest.raises(UserError, match="different weights"):
        load_artifact(other, path)
    if method in LIBRARY_METHODS:
        # peft's own loader reads the adapter (the base gets the split attentions and heads first)
        from safetensors import safe_open

        with safe_open(str(path / ADAPTER_WEIGHTS), "pt") as f:
            assert len((f.metadata() or {})[FINGERPRINT_KEY]) == 64
        peft_model = peft_model_from_artifact(_fresh(base_model), path)
        for key, value in head_outputs(peft_model.base_model.model).items():
            assert torch.equal(value, want[key]), key
        # a frozen BatchNorm statistic of the backbone is not reset by peft's partial load
        assert torch.equal(fresh.state_dict()["backbone.stem.conv1.norm.running_var"],
                           base_model.state_dict()["backbone.stem.conv1.norm.running_var"])  # fmt: skip


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
