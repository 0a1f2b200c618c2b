"""Every method x placement x residual on a small stand-in with Mask DINO's module names.

The same checks run on the real ``maskdino_tiny`` in test_peft_maskdino_tiny.py.
"""

from __future__ import annotations

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
)
from peft_standin import CLASSES, HEADS, LEVELS, POINTS, D, make_inputs, make_standin
from torch import nn

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
from models.peft.library import peft_layers
from models.peft.split_attention import SplitAttention

CASES = all_cases()
IDS = [c[0] for c in CASES]
HEADS_PARAMS = (D * CLASSES + CLASSES) + 3 * (D * D + D) + 2 * (D * D + D) + (D * 4 + 4)


def _outputs(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(*make_inputs(seed))


def _loss(model: nn.Module) -> torch.Tensor:
    model.train()
    out = model(*make_inputs(1))
    return sum((v.float() ** 2).mean() for v in out.values())  # type: ignore[return-value]


def _base(seed: int = 0, **kw: int) -> nn.Module:
    return make_trained_like(make_standin(seed, **kw))


def _applied(method: str, params: dict[str, Any], seed: int = 0, **kw: Any) -> tuple[nn.Module, Any]:
    model = _base(seed)
    info = apply_method(model, build_method_config(method, **params), **kw)
    return model, info


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_identity_at_init(cid: str, method: str, params: dict[str, Any]) -> None:
    # torch's CPU matmul picks its kernel by the operands' requires_grad (fold vs. batched), which
    # changes fp32 rounding; both forwards therefore run with every flag off, so any difference
    # is the method's own.
    model = _base(0)
    inputs = make_inputs(0)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        base = model(*inputs)
        apply_method(model, build_method_config(method, **params))
        model.eval().requires_grad_(False)
        got = model(*inputs)
    for key in base:
        if method in LIBRARY_METHODS:
            # peft's layers compute base + update (and a split attention projects q, k, v one at a
            # time; PiSSA / OLoRA leave W - B A in the base): fp32 rounding only
            torch.testing.assert_close(got[key], base[key], rtol=0, atol=1e-5)
        else:
            # adapters add exact zeros (zero-initialised up-projection): bit-identical
            assert torch.equal(got[key], base[key]), key


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_gradients_reach_exactly_the_trainable_set(cid: str, method: str, params: dict[str, Any]) -> None:
    model, info = _applied(method, params)
    wants, got = grad_vs_trainable(model, _loss)
    assert wants and wants == got
    assert set(info.trainable_names) == wants
    if method in (*LIBRARY_METHODS, "adapter"):
        assert not [n for n, p in layernorm_params(model) if p.requires_grad]
        assert not [n for n in wants if n.startswith("backbone.")]
        # the zero-initialised parts get a non-zero gradient on the first step (up.weight may not:
        # its gradient is zero where ReLU(down(h)) happens to be all zero in this tiny model)
        zero_init = (".up.bias", ".lora_B.default.weight", ".hada_w2_b.default", ".ia3_l.default")
        ups = [p for n, p in model.named_parameters() if n.endswith(zero_init)]
        assert ups and all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)


def _adapted_linears(params: dict[str, Any]) -> list[tuple[int, int]]:
    """(in, out) of every adapted linear (a MultiheadAttention slice counts as D -> D)."""
    offsets, weights = HEADS * LEVELS * POINTS * 2, HEADS * LEVELS * POINTS
    per_set = {  # 2 encoder + 2 decoder layers in the stand-in; FFN D -> 2D -> D
        "msda": 4 * [(D, offsets), (D, D)],
        "msda_attention_weights": 4 * [(D, weights)],
        "msda_output_proj": 4 * [(D, D)],
        "dec_self_qv": 2 * 2 * [(D, D)],
        "enc_ffn": 2 * [(D, 2 * D), (2 * D, D)],
        "dec_ffn": 2 * [(D, 2 * D), (2 * D, D)],
    }
    out: list[tuple[int, int]] = []
    for t in params.get("targets", ["msda", "dec_self_qv"]):
        if t.startswith("re:.*decoder"):  # decoder linear1 (D -> 2D) and/or one slice of self_attn
            out += 2 * ([(D, 2 * D)] if "linear1" in t else []) + 2 * len(params.get("mha_slices", ["v"])) * [
                (D, D)
            ]
        else:
            out += per_set[t]
    return out


@pytest.mark.parametrize(("cid", "method", "params"), CASES, ids=IDS)
def test_parameter_formulas(cid: str, method: str, params: dict[str, Any]) -> None:
    base = make_standin(0)
    base_total = count_parameters(base).total
    model, info = _applied(method, params)
    if method in LIBRARY_METHODS:
        added = added_parameters(method, params, _adapted_linears(params))
        assert info.total == base_total + added
        assert info.trainable == added + HEADS_PARAMS
    elif method == "adapter":
        reps, red = params["repetitions"], 4
        sites = 2 * len(params["placement"])  # 2 encoder, 2 decoder layers
        added = reps * sites * (2 * D * D // red + D // red + D)
        assert info.total == base_total + added
        assert info.trainable == added + HEADS_PARAMS
    else:
        head = base.sem_seg_head
        expect = {
            "full_head": base_total - sum(p.numel() for p in base.backbone.parameters()),
            "decoder_only": sum(p.numel() for p in head.predictor.parameters()),
            "class_mask": sum(
                p.numel()
                for m in (head.predictor.class_embed, head.predictor.mask_embed)
                for p in m.parameters()
            ),
        }[method]
        assert (info.total, info.trainable) == (base_total, expect)
    assert info.trainable_pct == pytest.approx(100 * info.trainable / info.total)


def test_shared_box_mlp_counted_once() -> None:
    model = make_standin(0)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False) if "bbox_embed" in n]
    assert len(names) == 3 * 6  # three aliases x 3 layers x (weight, bias)
    assert count_parameters(model).total == sum(p.numel() for p in model.parameters())


LORA_IDS = [c for c in CASES if c[1] in LIBRARY_METHODS]


@pytest.mark.parametrize(("cid", "method", "params"), LORA_IDS, ids=[c[0] for c in LORA_IDS])
def test_merge_equivalence_and_unmerge(cid: str, method: str, params: dict[str, Any]) -> None:
    base = make_standin(0)
    base_keys = {k: v.shape for k, v in base.state_dict().items()}
    base_total = count_parameters(base).total
    model, _ = _applied(method, params)
    before = _outputs(model)
    with torch.no_grad():  # move only the adapter tensors: the change below is the method's alone
        for name, p in model.named_parameters():
            if any(t in name for t in (".lora_B.", ".hada_w2_b.", ".ia3_l.")):
                p.normal_(0, 0.1)
    want = _outputs(model)
    assert not torch.allclose(want["logits"], before["logits"], atol=1e-4)
    perturb_trainable(model)
    want = _outputs(model)
    assert merge_lora(model) > 0
    for key, value in _outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)
    unmerge_lora(model)
    for key, value in _outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)
    merge_lora(model)  # merge_for_inference accepts merged and unmerged modules alike
    merge_for_inference(model)
    assert not peft_layers(model) and not [m for m in model.modules() if isinstance(m, SplitAttention)]
    assert {k: v.shape for k, v in model.state_dict().items()} == base_keys
    assert count_parameters(model).total == base_total
    for key, value in _outputs(model).items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "params"), [("lora", {}), ("lora", {"use_dora": True}), ("loha", {}), ("ia3", {})]
)
def test_merge_touches_only_q_and_v_rows(method: str, params: dict[str, Any]) -> None:
    base = _base(0)
    model, _ = _applied(method, params)
    perturb_trainable(model)
    merge_for_inference(model)
    for i in range(2):
        name = f"sem_seg_head.predictor.decoder.layers.{i}.self_attn.in_proj_weight"
        w0, w1 = base.state_dict()[name], model.state_dict()[name]
        assert not torch.equal(w1[:D], w0[:D])  # q adapted
        assert torch.equal(w1[D : 2 * D], w0[D : 2 * D])  # k bit-identical
        assert not torch.equal(w1[2 * D :], w0[2 * D :])  # v adapted
        # out_proj and FFN are not targets of the paper recipe
        for suffix in ("self_attn.out_proj.weight", "linear1.weight"):
            key = f"sem_seg_head.predictor.decoder.layers.{i}.{suffix}"
            assert torch.equal(model.state_dict()[key], base.state_dict()[key])


def test_merge_for_inference_keeps_adapters() -> None:
    model, _ = _applied("adapter", {"repetitions": 2})
    perturb_trainable(model)
    want = _outputs(model)
    merge_for_inference(model)
    assert sum(len(m.adapters) for m in model.modules() if isinstance(m, AdapterSite)) == 2 * 6
    for key, value in _outputs(model).items():
        assert torch.equal(value, want[key])


@pytest.mark.parametrize(
    ("method", "params"),
    [("lora", {}), ("lora", {"targets": ["dec_self_qv", "enc_ffn"]}), ("adapter", {"repetitions": 3}),
     ("full_head", {}), ("class_mask", {}), ("lora", {"use_dora": True, "init": "pissa"}), ("loha", {}),
     ("ia3", {})],
)  # fmt: skip
def test_artifact_round_trip(tmp_path: Path, method: str, params: dict[str, Any]) -> None:
    config = build_method_config(method, **params)
    model, _ = _applied(method, params, reinitialized=["sem_seg_head.predictor.label_enc"])
    perturb_trainable(model)
    want = _outputs(model)
    out = save_artifact(model, config, tmp_path / "art", base_name="standin")
    files = ["peftsweep.json", "trainable.safetensors"]
    if method in LIBRARY_METHODS:  # peft's format next to ours
        files += ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    fresh = _base(0)
    info = load_artifact(fresh, out)
    assert info.config == config and info.reinitialized == ("sem_seg_head.predictor.label_enc",)
    for key, value in _outputs(fresh).items():
        assert torch.equal(value, want[key]), key
    # saving again over an existing artifact replaces it
    save_artifact(model, config, out, base_name="standin")


def test_artifact_rejects_other_base(tmp_path: Path) -> None:
    config = build_method_config("lora")
    model, _ = _applied("lora", {})
    path = save_artifact(model, config, tmp_path / "a", base_name="standin")
    with pytest.raises(UserError, match="different weights"):
        load_artifact(_base(seed=1), path)
    other = _base(0)
    with torch.no_grad():  # one frozen backbone weight differs by one element
        other.backbone[0].weight[0, 0] += 1e-3  # type: ignore[index,operator]
    with pytest.raises(UserError, match="fingerprint"):
        load_artifact(other, path)
    with pytest.raises(UserError, match="different weights"):  # another class count: label_enc differs
        load_artifact(_base(0, classes=CLASSES + 2), path)
    # same frozen base, but a trained head of another shape: named as a shape mismatch
    other = _base(0)
    other.sem_seg_head.predictor.class_embed = nn.Linear(D, CLASSES + 2)
    with pytest.raises(
        UserError, match=r"class_embed\.(weight|bias) has shape \(3,( 16)?\), model has \(5,( 16)?\)"
    ):
        load_artifact(other, path)
    with pytest.raises(UserError, match="is for base model 'standin', not 'other'"):
        load_artifact(_base(0), path, base_name="other")
    with pytest.raises(UserError, match="not a PEFT artifact"):
        load_artifact(_base(0), tmp_path / "missing")


def test_artifact_refuses_merged_lora(tmp_path: Path) -> None:
    config = build_method_config("lora")
    model, _ = _applied("lora", {})
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge"):
        save_artifact(model, config, tmp_path / "a", base_name="standin")
    merge_for_inference(model)
    with pytest.raises(ValueError, match="merged for inference"):
        save_artifact(model, config, tmp_path / "a", base_name="standin")
    assert not (tmp_path / "a").exists()


def test_reinitialised_and_extra_trainable() -> None:
    model, info = _applied(
        "adapter",
        {"extra_trainable": [r"sem_seg_head\.pixel_decoder\.transformer\.level_embed"]},
        reinitialized=["sem_seg_head.predictor.label_enc.weight"],
    )
    names = set(info.trainable_names)
    assert "sem_seg_head.predictor.label_enc.weight" in names
    assert "sem_seg_head.pixel_decoder.transformer.level_embed" in names
    model, info = _applied("lora", {"train_heads": False})
    assert all(".lora_" in n for n in info.trainable_names)
    with pytest.raises(UserError, match=r"lora\.extra_trainable: pattern .*nothing.* matches no parameter"):
        _applied("lora", {"extra_trainable": [r"nothing\.here"]})


def test_apply_rejections() -> None:
    model, _ = _applied("lora", {})
    with pytest.raises(ValueError, match="already"):
        apply_method(model, build_method_config("adapter"))
    with pytest.raises(UserError, match="adapter.reduction must divide the hidden size 16, got 3"):
        _applied("adapter", {"reduction": 3})
    with pytest.raises(UserError, match="inside a MultiheadAttention"):
        _applied("lora", {"targets": [r"re:.*self_attn\.out_proj"]})
    with pytest.raises(UserError, match="selects no Linear"):
        _applied("lora", {"targets": [r"re:no\.such\.module"]})
