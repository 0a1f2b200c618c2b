"""SEEM: building blocks against independent references, the tiny config's training/inference
behaviour on CPU, the paper configs' parameter counts (meta device) and checkpoint round-trips."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import MODEL_CONFIGS, build_model, get_model_config
from models.backbones.focal import FocalModulation, FocalModulationBlock, FocalNet, build_focal_backbone
from models.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from models.errors import UserError
from models.seem.decoder import ClassEmbed, CrossAttentionLayer
from models.seem.language import LanguageEncoder, TextTransformer
from models.seem.meta_arch import SEEM, softmax_instance_inference
from models.seem.pixel_decoder import EncoderLayer

Sample = Callable[..., dict[str, Any]]
CLASSES = 3


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tiny(seed: int = 0, num_classes: int = CLASSES) -> SEEM:
    torch.manual_seed(seed)
    model = build_model("seem_tiny", num_classes=num_classes)
    assert isinstance(model, SEEM)
    return model


def _raw(model: SEEM, batch: list[dict[str, Any]]) -> dict[str, Any]:
    images = model.preprocess(batch)
    return model.sem_seg_head(model.backbone(images.tensor))  # type: ignore[no-any-return]


# ---------------------------------------------------------------- registry / configs


def test_configs_registered_with_paper_hyperparameters() -> None:
    for name in ("seem_focall", "seem_focall_table", "seem_focalt", "seem_tiny"):
        assert MODEL_CONFIGS[name].family == "seem"
    cfg = get_model_config("seem_focall", 4)
    assert (cfg.num_classes, cfg.hidden_dim, cfg.num_queries, cfg.dec_layers, cfg.enc_layers) == (
        4,
        512,
        101,
        9,
        6,
    )
    assert (cfg.conv_dim, cfg.mask_dim, cfg.nheads, cfg.dim_feedforward) == (512, 512, 8, 2048)
    assert (cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    tiny = get_model_config("seem_tiny")
    assert (tiny.hidden_dim, tiny.enc_layers, tiny.dec_layers, tiny.num_queries) == (64, 2, 3, 20)
    with pytest.raises(UserError, match="no_such_field"):
        get_model_config("seem_tiny", no_such_field=1)
    with pytest.raises(UserError, match="num_classes"):
        get_model_config("seem_tiny", 0)
    with pytest.raises(UserError, match="nheads"):
        get_model_config("seem_tiny", nheads=5)


def test_focall_table_param_count_and_structure() -> None:
    # meta tensors: real shapes and module tree, no memory or init cost for 277M parameters
    with torch.device("meta"):
        a = build_model("seem_focall_table", num_classes=80)
        b = build_model("seem_focall_table", num_classes=83)
    assert isinstance(a, SEEM)
    # Focal-L (fl4, conv embedding, layer scale): 205.7M; head: 6-layer encoder + FPN at 512,
    # 9-layer decoder at 512 with 101 queries
    assert _n(a.backbone) == 205_746_936
    assert _n(a.sem_seg_head.pixel_decoder) == 32_193_536
    assert _n(a.sem_seg_head.predictor) == 39_033_857
    assert _n(a) == 276_974_329
    assert _n(b) - _n(a) == 3 * 512  # one 512-d class embedding per class
    names = {n for n, _ in a.named_modules()}
    mha = [n for n, m in a.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(mha) == 6 + 9 + 9
    assert sum(n.endswith("_site") for n in names) == 24
    shapes = a.backbone.output_shape()
    assert [shapes[f"res{i}"].channels for i in range(2, 6)] == [192, 384, 768, 1536]
    with torch.device("meta"):
        t = build_model("seem_focalt", num_classes=80)
        f = build_model("seem_focall", num_classes=80)
    assert [t.backbone.output_shape()[f"res{i}"].channels for i in range(2, 6)] == [96, 192, 384, 768]
    assert _n(t.sem_seg_head.predictor) == _n(f.sem_seg_head.predictor)


# ---------------------------------------------------------------- the official v1 layout

SEEM_DATA = Path(__file__).resolve().parents[1] / "data" / "seem"


def _manifest() -> dict[str, Any]:
    return json.loads((SEEM_DATA / "manifest_focall_v1.json").read_text())  # type: ignore[no-any-return]


def _official_keys(manifest: dict[str, Any], spatial: bool) -> list[tuple[str, list[int], str]]:
    removed = set(manifest["variant_spatial_disabled"]["removed_keys"])
    return [(k, shape, kind) for k, shape, kind in manifest["keys"] if spatial or k not in removed]


@pytest.mark.parametrize("spatial", [True, False], ids=["spatial", "paper"])
def test_focall_matches_official_v1_manifest(spatial: bool) -> None:
    """seem_focall builds the official focall_unicl_lang_v1 state_dict: every key, in order, with its
    shape and kind; spatial=False is the official SPATIAL.ENABLED False build (6 keys fewer)."""
    manifest = _manifest()
    with torch.device("meta"):
        model = build_model("seem_focall", num_classes=133, spatial=spatial)
    sd = model.state_dict(keep_vars=True)
    expected = _official_keys(manifest, spatial)
    assert list(sd) == [k for k, _, _ in expected], "state_dict keys (and their order) must be the official"
    params = {id(p) for p in model.parameters()}
    for key, shape, kind in expected:
        assert list(sd[key].shape) == shape, key
        assert (id(sd[key]) in params) == (kind == "param"), key
    assert len({id(v) for v in sd.values()}) == len(sd), "no tied tensors upstream"
    counts = manifest["counts"] if spatial else manifest["variant_spatial_disabled"]
    assert _n(model) == counts["total_params"]
    assert _n(model.backbone) == counts["by_top_module"]["backbone"]
    assert _n(model.sem_seg_head) == counts["by_top_module"]["sem_seg_head"]
    by = manifest["counts"]["by_component"]
    for part in ("sem_seg_head.pixel_decoder", "sem_seg_head.predictor.lang_encoder"):
        assert _n(model.get_submodule(part)) == by[part], part
    assert "pixel_mean" not in sd and "pixel_std" not in sd


def _official_state_dict(manifest: dict[str, Any], spatial: bool = True) -> dict[str, torch.Tensor]:
    """A state dict laid out like the released checkpoint (flat, official names and shapes), on meta."""
    return {k: torch.empty(shape, device="meta") for k, shape, _ in _official_keys(manifest, spatial)}


@pytest.mark.parametrize("spatial", [True, False], ids=["spatial", "paper"])
def test_focall_loads_an_official_layout_state_dict(spatial: bool) -> None:
    manifest = _manifest()
    with torch.device("meta"):
        model = build_model("seem_focall", num_classes=4, spatial=spatial)
    report = load_state_dict_checked(model, _official_state_dict(manifest), "seem_focall_v1.pt")
    assert report.ok and report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    # 133 COCO classes -> 4: nothing is class-dependent but the derived no-object weights
    assert (report.checkpoint_num_classes, report.model_num_classes) == (133, 4)
    assert report.reinitialised == [] and "criterion.empty_weight" not in report.loaded
    assert len(report.loaded) == len(model.state_dict()) - 1
    removed = manifest["variant_spatial_disabled"]["removed_keys"]
    assert sorted(report.ignored) == ([] if spatial else sorted(removed))
    # a file without the buffers (the released file may lack them) still fits
    no_buffers = {k: v for k, v in _official_state_dict(manifest).items() if k not in SEEM.derived_state_keys}
    assert load_state_dict_checked(model, no_buffers, "x.pt").ok


def test_official_layout_with_a_missing_part_is_an_error() -> None:
    manifest = _manifest()
    with torch.device("meta"):
        model = build_model("seem_focall", num_classes=4)
    sd = {k: v for k, v in _official_state_dict(manifest).items() if ".lang_encoder." not in k}
    with pytest.raises(
        UserError,
        match=r"^seem\.pt: checkpoint does not fit .* missing \(sem_seg_head\.predictor\.lang_encoder\.",
    ):
        load_state_dict_checked(model, sd, "seem.pt")
    with torch.device("meta"):
        table = build_model("seem_focall_table", num_classes=4)  # the closed-set variant is another layout
    with pytest.raises(UserError, match=r"unexpected \(.*sem_seg_head\.predictor\.class_embed\b"):
        load_state_dict_checked(table, _official_state_dict(manifest, spatial=False), "seem.pt")


# ---------------------------------------------------------------- building blocks vs references


def test_encoder_layer_matches_torch_transformer_layer() -> None:
    """With a zero position embedding the DETR post-norm layer is torch's TransformerEncoderLayer."""
    torch.manual_seed(0)
    layer = EncoderLayer(32, 4, 64, 0.0).eval()
    ref = nn.TransformerEncoderLayer(
        32, 4, 64, 0.0, activation="relu", batch_first=True, norm_first=False
    ).eval()
    ref.load_state_dict({k: v for k, v in layer.state_dict().items()})
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(layer(x, torch.zeros_like(x)), ref(x), rtol=1e-5, atol=1e-5)
    # the position embedding enters queries and keys, not values
    pos = torch.randn(2, 7, 32)
    q = x + pos
    attn = layer.self_attn
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    heads = lambda t: t.view(2, 7, 4, 8).transpose(1, 2)  # noqa: E731
    qh, kh, vh = heads(F.linear(q, w_q, b_q)), heads(F.linear(q, w_k, b_k)), heads(F.linear(x, w_v, b_v))
    a = ((qh @ kh.transpose(-1, -2)) / math.sqrt(8)).softmax(-1) @ vh
    out = attn.out_proj(a.transpose(1, 2).reshape(2, 7, 32))
    h = layer.norm1(x + out)
    expected = layer.norm2(h + layer.linear2(F.relu(layer.linear1(h))))
    torch.testing.assert_close(layer(x, pos), expected, rtol=1e-5, atol=1e-5)


def test_masked_cross_attention_matches_naive_reference() -> None:
    torch.manual_seed(1)
    layer = CrossAttentionLayer(16, 2).eval()
    tgt, qpos = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    mem, pos = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    blocked = torch.tensor([[True, True, False, False, True], [False] * 5, [True, False, True, True, True]])
    mask = blocked[None].repeat(2, 1, 1)  # (N * heads, Q, S)
    w_q, w_k, w_v = layer.multihead_attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = layer.multihead_attn.in_proj_bias.chunk(3)
    heads = lambda t: t.view(1, -1, 2, 8).transpose(1, 2)  # noqa: E731
    q = heads(F.linear(tgt + qpos, w_q, b_q))
    k = heads(F.linear(mem + pos, w_k, b_k))
    v = heads(F.linear(mem, w_v, b_v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    scores = scores.masked_fill(blocked[None, None], float("-inf"))
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 3, 16)
    expected = layer.norm(tgt + layer.multihead_attn.out_proj(a))
    torch.testing.assert_close(layer(tgt, mem, mask, pos, qpos), expected, rtol=1e-5, atol=1e-5)


def test_focal_modulation_matches_explicit_formula() -> None:
    torch.manual_seed(2)
    mod = FocalModulation(8, focal_window=3, focal_level=2, normalize_modulator=True).eval()
    x = torch.randn(2, 5, 6, 8)
    proj = mod.f(x).permute(0, 3, 1, 2)
    q, ctx, gates = proj[:, :8], proj[:, 8:16], proj[:, 16:]
    assert gates.shape[1] == 3
    k3 = mod.get_parameter("focal_layers.0.0.weight")  # 3x3 depth-wise
    k5 = mod.get_parameter("focal_layers.1.0.weight")  # 5x5 depth-wise
    assert k3.shape == (8, 1, 3, 3) and k5.shape == (8, 1, 5, 5)
    c1 = F.gelu(F.conv2d(ctx, k3, padding=1, groups=8))
    c2 = F.gelu(F.conv2d(c1, k5, padding=2, groups=8))
    glob = F.gelu(c2.mean((2, 3), keepdim=True))
    agg = (c1 * gates[:, 0:1] + c2 * gates[:, 1:2] + glob * gates[:, 2:3]) / 3
    modulator = F.conv2d(agg, mod.h.weight, mod.h.bias)
    expected = mod.proj((q * modulator).permute(0, 2, 3, 1))
    torch.testing.assert_close(mod(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dw", [False, True], ids=["focal", "focal_dw"])
def test_focal_block_wiring_with_post_ln_and_layer_scale(dw: bool) -> None:
    torch.manual_seed(4)
    blk = FocalModulationBlock(8, focal_level=2, use_postln=True, use_layerscale=True, use_dw_conv=dw).eval()
    with torch.no_grad():
        for p in (blk.gamma_1, blk.gamma_2):
            assert p is not None
            p.uniform_(0.5, 1.5)
    g1, g2 = blk.get_parameter("gamma_1"), blk.get_parameter("gamma_2")
    h, w = 3, 4
    x = torch.randn(2, h * w, 8)

    def dw_conv(conv: nn.Module, t: torch.Tensor) -> torch.Tensor:
        img = t.transpose(1, 2).reshape(2, 8, h, w)
        return t + conv(img).flatten(2).transpose(1, 2)

    def modulate(t: torch.Tensor) -> torch.Tensor:
        return blk.modulation(t.view(2, h, w, 8)).view(2, h * w, 8)

    if not dw:  # FocalNet: post-LN on the branch outputs
        y = x + g1 * blk.norm1(modulate(x))
        expected = y + g2 * blk.norm2(blk.mlp(y))
    else:  # focal_dw: dw residual convs, post-LN after the residual sums
        assert blk.dw1 is not None and blk.dw2 is not None
        y = dw_conv(blk.dw1, x)
        y = blk.norm1(y + g1 * modulate(y))
        y = dw_conv(blk.dw2, y)
        expected = blk.norm2(y + g2 * blk.mlp(y))
    torch.testing.assert_close(blk(x, h, w), expected, rtol=1e-5, atol=1e-5)


def test_focalnet_output_strides_for_odd_sizes() -> None:
    torch.manual_seed(0)
    net = build_focal_backbone(
        "focal",
        embed_dim=8,
        depths=(1, 1, 1, 1),
        focal_levels=(2,) * 4,
        focal_windows=(3,) * 4,
        use_conv_embed=True,
        use_layerscale=True,
        use_postln=True,
        use_dw_conv=True,
    )
    assert isinstance(net, FocalNet)
    out = net(torch.randn(1, 3, 70, 45))
    assert [tuple(out[f"res{i}"].shape) for i in range(2, 6)] == [
        (1, 8, 18, 12),
        (1, 16, 9, 6),
        (1, 32, 5, 3),
        (1, 64, 3, 2),
    ]
    assert net.output_shape()["res4"].stride == 16
    keys = net.state_dict().keys()
    for key in (
        "patch_embed.proj.weight",
        "layers.0.blocks.0.modulation.focal_layers.1.0.weight",
        "layers.0.blocks.0.gamma_1",
        "layers.0.blocks.0.dw1.weight",
        "layers.2.downsample.norm.bias",
        "norm3.weight",
    ):
        assert key in keys


def test_class_embed_is_scaled_cosine_with_no_object_last() -> None:
    torch.manual_seed(3)
    ce = ClassEmbed(6, 4, num_classes=3)
    x = torch.randn(2, 5, 6)
    logits = ce(x)
    assert logits.shape == (2, 5, 4)
    weight, no_object = ce.get_parameter("weight"), ce.get_parameter("no_object")
    emb = F.normalize(x @ ce.proj, dim=-1)
    table = F.normalize(torch.cat([weight, no_object]), dim=-1)
    torch.testing.assert_close(logits, emb @ table.T / 0.07, rtol=1e-5, atol=1e-5)
    keep = ce.proj.detach().clone(), no_object.detach().clone(), weight.detach().clone()
    ce.reset_class_parameters()
    assert torch.equal(ce.proj, keep[0]) and torch.equal(no_object, keep[1])
    assert not torch.equal(weight, keep[2])


def test_softmax_instance_inference_topk_and_scores() -> None:
    cls = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # K = 2; query 1 is "no object"
    masks = torch.full((2, 4, 4), -5.0)
    masks[0, :2, :3] = 5.0
    inst = softmax_instance_inference(cls, masks, topk=2)
    p = cls.softmax(-1)
    assert inst.pred_classes[inst.scores.argmax()] == 0
    inside = torch.sigmoid(torch.tensor(5.0))
    torch.testing.assert_close(inst.scores.max(), p[0, 0] * inside)
    best = inst.scores.argmax()
    assert inst.pred_boxes.tensor[best].tolist() == [0.0, 0.0, 3.0, 2.0]
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (2, 4, 4)


# ---------------------------------------------------------------- tiny model behaviour


def test_tiny_forward_backward(make_sample: Sample) -> None:
    model = _tiny().train()
    losses = model([make_sample(0), make_sample(1)])
    dec = model.cfg.dec_layers
    assert set(losses) == {
        f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in [""] + [f"_{i}" for i in range(dec)]
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    # the class embedding gets gradient through the cosine classifier, the backbone through the FPN
    for name in ("sem_seg_head.predictor.class_embed.weight", "backbone.patch_embed.proj.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_without_deep_supervision_only_final_losses(make_sample: Sample) -> None:
    torch.manual_seed(0)
    model = build_model("seem_tiny", num_classes=CLASSES, deep_supervision=False).train()
    losses = model([make_sample(0)])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert losses["loss_ce"].item() > 0 and losses["loss_dice"].item() > 0


def test_tiny_eval_output_contract(make_sample: Sample) -> None:
    model = _tiny().eval()
    a, b = make_sample(0), make_sample(1, size=64)
    a = {**a, "height": 50, "width": 70}  # output resized to the requested size
    with torch.no_grad():
        out = model([a, b])
    assert len(out) == 2
    inst = out[0]["instances"]
    k = min(model.cfg.test_topk_per_image, model.cfg.num_queries * CLASSES)
    assert inst.image_size == (50, 70)
    assert inst.pred_masks.shape == (k, 50, 70) and inst.pred_masks.dtype == torch.bool
    assert inst.scores.shape == (k,) and inst.pred_classes.max() < CLASSES
    assert inst.pred_boxes.tensor.shape == (k, 4)
    assert out[1]["instances"].pred_masks.shape[-2:] == (64, 64)
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()


@pytest.mark.slow
def test_tiny_overfits_two_images(make_sample: Sample) -> None:
    model = _tiny(seed=0).train()
    batch = [make_sample(0), make_sample(1)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.2 * history[0], history
    model.eval()
    with torch.no_grad():
        out = model(batch)
    for o, sample in zip(out, batch):
        inst, gt = o["instances"], sample["instances"]
        for k in range(len(gt)):
            sel = torch.nonzero(inst.pred_classes == gt.gt_classes[k]).flatten()
            best = sel[inst.scores[sel].argmax()]
            pm, gm = inst.pred_masks[best], gt.gt_masks.tensor[k]
            iou = float((pm & gm).sum() / (pm | gm).sum())
            assert iou > 0.8 and float(inst.scores[best]) > 0.5, (k, iou, float(inst.scores[best]))


# ---------------------------------------------------------------- optional language encoder

LANG_TINY = {
    "lang_encoder": True,
    "lang_width": 32,
    "lang_layers": 2,
    "lang_heads": 4,
    "lang_vocab": 64,
    "lang_context": 8,
}


def test_text_transformer_is_causal() -> None:
    torch.manual_seed(5)
    tt = TextTransformer(vocab=50, context=6, width=16, layers=2, heads=2).eval()
    a = torch.tensor([[48, 3, 7, 9, 49]])
    b = torch.tensor([[48, 3, 7, 11, 2]])  # differs from position 3 on
    fa, fb = tt(a), tt(b)
    torch.testing.assert_close(fa[:, :3], fb[:, :3])
    assert (fa[:, 3:] - fb[:, 3:]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="context"):
        tt(torch.zeros(1, 7, dtype=torch.long))


def test_language_encoder_pools_eot_and_caches_in_eval() -> None:
    torch.manual_seed(6)
    enc = LanguageEncoder(num_classes=2, width=16, layers=1, heads=2, vocab=40, context=8, dim_proj=8)
    tokens = enc.class_tokens
    assert tokens.tolist() == [[38, 1, 39], [38, 2, 39], [38, 3, 39]]  # [SOT, 1 + i, EOT]
    feats = enc.lang_encoder(tokens)[:, -1]  # EOT is the last (and largest) token here
    expected = F.normalize(feats @ enc.lang_proj, dim=-1)
    torch.testing.assert_close(enc(), expected)
    enc.eval()
    with torch.no_grad():
        first = enc()
        assert enc() is first  # cached
        enc.lang_proj.mul_(2.0)  # an in-place update invalidates the cache
        assert enc() is not first
    new = torch.tensor([[38, 5, 6, 39], [38, 7, 39, 0], [38, 39, 0, 0]])
    enc.set_class_tokens(new)
    with torch.no_grad():
        out = enc()
    pooled = enc.lang_encoder(new)[torch.arange(3), new.argmax(-1)]
    torch.testing.assert_close(out, F.normalize(pooled @ enc.lang_proj, dim=-1))
    with pytest.raises(ValueError, match="class tokens"):
        enc.set_class_tokens(torch.zeros(2, 3, dtype=torch.long))


def test_tiny_official_layout_trains_and_loads_a_flat_file_across_class_counts(
    tmp_path: Path, make_sample: Sample
) -> None:
    """The official layout at CPU size (language encoder, spatial parts): trains, and a flat
    upstream-style file (state_dict only, no "model" sub-dict) loads into another class count."""
    torch.manual_seed(0)
    model = build_model("seem_tiny", num_classes=CLASSES, spatial=True, **LANG_TINY).train()
    assert isinstance(model, SEEM)
    ce = model.sem_seg_head.predictor.class_embed
    assert isinstance(ce, nn.Parameter) and tuple(ce.shape) == (64, 64)
    loss = sum(model([make_sample(0)]).values())
    loss.backward()
    for name in ("sem_seg_head.predictor.lang_encoder.lang_proj", "sem_seg_head.predictor.class_embed"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    path = tmp_path / "seem_v1_like.pt"
    torch.save(model.state_dict(), path)  # upstream's save_pretrained: a flat state dict
    other = build_model("seem_tiny", num_classes=5, spatial=True, **LANG_TINY).eval()
    report = load_checkpoint(other, path, num_classes=5)
    # no class-dependent parameters: the prompts are a buffer derived from the class count
    assert report.ok and report.reinitialised == [] and report.checkpoint_num_classes == CLASSES
    assert other.criterion.empty_weight.shape == (6,)
    sd = model.state_dict()
    for k, v in other.state_dict().items():
        if k != "criterion.empty_weight":
            assert torch.equal(v, sd[k]), k
    model.eval()
    with torch.no_grad():
        out = model([make_sample(1)])
        logits_a = _raw(model, [make_sample(1)])["pred_masks"]
        logits_b = _raw(other, [make_sample(1)])["pred_masks"]
    assert out[0]["instances"].pred_classes.max() < CLASSES
    assert torch.equal(logits_a, logits_b)  # masks do not depend on the class count
    # without spatial parts the same file loads with them ignored
    plain = build_model("seem_tiny", num_classes=CLASSES, **LANG_TINY)
    report = load_checkpoint(plain, path)
    assert report.ok and len(report.ignored) == 6
    with pytest.raises(UserError, match="spatial"):
        get_model_config("seem_tiny", spatial=True)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_class_change(tmp_path: Path, make_sample: Sample) -> None:
    src = _tiny(seed=0).eval()
    path = tmp_path / "seem_tiny.pth"
    save_checkpoint(src, path, {"model": "seem_tiny"})
    dst = _tiny(seed=1).eval()
    report = load_checkpoint(dst, path, num_classes=CLASSES)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert report.reinitialised == []
    batch = [make_sample(0)]
    with torch.no_grad():
        a, b = _raw(src, batch), _raw(dst, batch)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_masks"], b["pred_masks"])

    # a new class count: only the class table is re-initialised; projection, background embedding,
    # temperature and everything else carry over
    other = _tiny(seed=2, num_classes=5)
    report = load_checkpoint(other, path, num_classes=5)
    assert report.reinitialised == ["sem_seg_head.predictor.class_embed.weight"]
    assert report.missing == [] and report.shape_mismatch == []
    sd_src, sd_other = src.state_dict(), other.state_dict()
    for key, value in sd_other.items():
        if key not in ("sem_seg_head.predictor.class_embed.weight", "criterion.empty_weight"):
            assert torch.equal(value, sd_src[key]), key
    assert other.criterion.empty_weight.shape == (6,)
