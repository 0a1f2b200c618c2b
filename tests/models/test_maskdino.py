"""Mask DINO: official key/shape manifests, building blocks against independent references, and
the tiny config's training/inference behaviour on CPU."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from detectron2.structures import BitMasks, Instances
from torch import nn

from models import MODEL_CONFIGS, available_models, build_model
from models.backbones.swin import SwinBlock, SwinStage, SwinTransformer
from models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou, masks_to_boxes
from models.errors import UserError
from models.layers import AdapterSite, PositionEmbeddingSine, sine_embed_for_boxes
from models.losses import focal_class_loss, point_sample, sigmoid_focal_loss
from models.maskdino.denoising import dn_indices, prepare_dn_queries
from models.maskdino.meta_arch import MaskDINO, instance_inference
from models.maskdino.predictor import encoder_output_proposals
from models.matcher import HungarianMatcher

DATA = Path(__file__).resolve().parents[1] / "data" / "maskdino"
Sample = Callable[..., dict[str, Any]]


def _unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() already de-duplicates


def _check_against_manifest(model: MaskDINO, manifest_name: str) -> None:
    manifest = json.loads((DATA / manifest_name).read_text())
    expected = manifest["state_dict"]
    sd = model.state_dict(keep_vars=True)
    assert list(sd) == list(expected), "state_dict keys (and their order) must equal the official model's"
    params = {id(p) for p in model.parameters()}
    by_id: dict[int, str] = {}
    for key, value in sd.items():
        info = expected[key]
        assert list(value.shape) == info["shape"], key
        assert str(value.dtype).removeprefix("torch.") == info["dtype"], key
        assert (id(value) in params) == (info["kind"] == "parameter"), key
        if "alias_of" in info:
            assert value is sd[info["alias_of"]], f"{key} must be the same tensor as {info['alias_of']}"
        else:
            assert id(value) not in by_id, f"{key} unexpectedly aliases {by_id.get(id(value))}"
            by_id[id(value)] = key
    counts = manifest["meta"]["params"]
    assert _unique_params(model) == counts["total"]
    assert _unique_params(model.backbone) == counts["backbone"]
    assert _unique_params(model.sem_seg_head.pixel_decoder) == counts["pixel_decoder"]
    assert _unique_params(model.sem_seg_head.predictor) == counts["predictor"]
    assert "pixel_mean" not in sd and "pixel_std" not in sd


def test_r50_matches_official_manifest() -> None:
    model = _maskdino("maskdino_r50", 80)
    _check_against_manifest(model, "manifest_r50.json")
    assert _unique_params(model) == 52_058_004


def test_swinl_matches_official_manifest() -> None:
    # meta tensors: real shapes and module tree, no memory or init cost for 223M parameters
    with torch.device("meta"):
        model = _maskdino("maskdino_swinl", 80)
    _check_against_manifest(model, "manifest_swinl.json")
    assert _unique_params(model) == 222_799_144


def test_class_count_changes_513_params_per_class() -> None:
    with torch.device("meta"):
        a = build_model("maskdino_r50", num_classes=80)
        b = build_model("maskdino_r50", num_classes=83)
    assert _unique_params(b) - _unique_params(a) == 3 * 513


def test_registry_and_bad_input() -> None:
    assert {"maskdino_r50", "maskdino_swinl", "maskdino_tiny"} <= set(MODEL_CONFIGS)
    assert {"maskdino_r50", "maskdino_swinl", "maskdino_tiny"} <= set(available_models())
    with pytest.raises(UserError, match="model"):
        build_model("maskdino_nope", num_classes=3)
    with pytest.raises(UserError, match="not_a_field"):
        build_model("maskdino_tiny", num_classes=3, not_a_field=1)
    with pytest.raises(UserError, match="num_classes"):
        build_model("maskdino_tiny", num_classes=0)


# ---------------------------------------------------------------- building blocks vs references


def test_box_ops_match_torchvision_and_detectron2() -> None:
    g = torch.Generator().manual_seed(0)
    a = box_cxcywh_to_xyxy(torch.rand(5, 4, generator=g) * 0.5 + 0.2)
    b = box_cxcywh_to_xyxy(torch.rand(7, 4, generator=g) * 0.5 + 0.2)
    torch.testing.assert_close(generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b))
    masks = torch.rand(6, 20, 30, generator=g) > 0.97
    masks[0] = False
    masks[1, 3:9, 4:20] = True
    expected = BitMasks(masks).get_bounding_boxes().tensor
    torch.testing.assert_close(masks_to_boxes(masks, "bitmask"), expected)
    nonempty = masks[1:]
    torch.testing.assert_close(masks_to_boxes(nonempty, "mask2box"), torchvision.ops.masks_to_boxes(nonempty))


def test_focal_loss_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 4, generator=g)
    targets = (torch.rand(2, 6, 4, generator=g) > 0.7).float()
    ref = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 3.0), ref.mean(1).sum() / 3.0)
    # focal_class_loss builds the one-hot from matched labels; unmatched queries are all-negative
    indices = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.tensor([5]), torch.tensor([0]))]
    labels = [torch.tensor([3, 1]), torch.tensor([2])]
    onehot = torch.zeros(2, 6, 4)
    onehot[0, 2, 1] = onehot[0, 0, 3] = onehot[1, 5, 2] = 1
    ref2 = torchvision.ops.sigmoid_focal_loss(logits, onehot, reduction="none").mean(1).sum() / 3.0 * 6
    torch.testing.assert_close(focal_class_loss(logits, labels, indices, 3.0), ref2)


def test_point_sample_is_bilinear_at_pixel_centres() -> None:
    img = torch.arange(12.0).view(1, 1, 3, 4)
    # centre of pixel (row 1, col 2) and the midpoint between (0,0) and (0,1)
    coords = torch.tensor([[[2.5 / 4, 1.5 / 3], [1.0 / 4, 0.5 / 3]]])
    torch.testing.assert_close(point_sample(img, coords)[0, 0], torch.tensor([6.0, 0.5]))


def test_position_embedding_matches_detr_formula() -> None:
    x = torch.zeros(2, 8, 3, 5)
    pe = PositionEmbeddingSine(num_pos_feats=4)(x)
    assert pe.shape == (2, 8, 3, 5)
    # independent reference: DETR's cumsum formulation without padding
    not_mask = torch.ones(1, 3, 5)
    y = not_mask.cumsum(1) / (3 + 1e-6) * 2 * math.pi
    xx = not_mask.cumsum(2) / (5 + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(4) // 2) / 4)
    px, py = xx[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), 4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), 4).flatten(3)
    torch.testing.assert_close(pe[:1], torch.cat((py, px), 3).permute(0, 3, 1, 2))


def test_sine_embed_for_boxes_layout() -> None:
    boxes = torch.tensor([[[0.25, 0.5, 0.1, 0.2]]])
    emb = sine_embed_for_boxes(boxes, 8)
    assert emb.shape == (1, 1, 16)
    # first feature of each block is sin(2*pi*coord); block order (y, x, w, h)
    torch.testing.assert_close(emb[0, 0, ::4], torch.sin(2 * math.pi * boxes[0, 0, [1, 0, 2, 3]]))


def test_encoder_output_proposals() -> None:
    memory = torch.ones(1, 4 * 4 + 2 * 2, 8)
    shapes = torch.tensor([[4, 4], [2, 2]])
    out_memory, props = encoder_output_proposals(memory, shapes)
    sig = props.sigmoid()
    torch.testing.assert_close(sig[0, 0], torch.tensor([0.125, 0.125, 0.05, 0.05]))
    torch.testing.assert_close(sig[0, 16], torch.tensor([0.25, 0.25, 0.1, 0.1]))
    assert torch.isfinite(props).all() and torch.equal(out_memory, memory)


def test_hungarian_matcher_is_optimal() -> None:
    g = torch.Generator().manual_seed(3)
    outputs = {
        "pred_logits": torch.randn(1, 5, 3, generator=g),
        "pred_boxes": torch.rand(1, 5, 4, generator=g) * 0.4 + 0.3,
        "pred_masks": torch.randn(1, 5, 8, 8, generator=g),
    }
    targets = [
        {
            "labels": torch.tensor([0, 2, 1]),
            "boxes": torch.rand(3, 4, generator=g) * 0.4 + 0.3,
            "masks": torch.rand(3, 16, 16, generator=g) > 0.5,
        }
    ]
    matcher = HungarianMatcher(num_points=64)
    torch.manual_seed(0)
    ((rows, cols),) = matcher(outputs, targets)
    torch.manual_seed(0)  # same random points -> same cost matrix
    cost = matcher.cost_matrix(outputs, targets, 0)
    best = min(
        sum(cost[q, t].item() for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3)
    )
    assert cost[rows, cols].sum().item() == pytest.approx(best, rel=1e-6)
    # generic use without boxes (SEEM) and with a softmax class cost
    plain = HungarianMatcher(class_cost_type="softmax", cost_box=0, cost_giou=0, num_points=64)
    ((rows2, cols2),) = plain(
        {"pred_logits": torch.randn(1, 5, 4), "pred_masks": outputs["pred_masks"]},
        [{"labels": targets[0]["labels"], "masks": targets[0]["masks"]}],
    )
    assert len(rows2) == len(cols2) == 3


def test_denoising_queries_and_attention_mask() -> None:
    label_enc = nn.Embedding(5, 8)
    targets = [
        {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])},
        {"labels": torch.tensor([4]), "boxes": torch.tensor([[0.6, 0.4, 0.3, 0.2]])},
    ]
    dn = prepare_dn_queries(targets, label_enc, num_queries=3, dn_num=5, noise_scale=0.0)
    assert dn is not None
    assert (dn.single_pad, dn.scalar, dn.pad_size) == (2, 2, 4)
    assert dn.label_queries.shape == (2, 4, 8) and dn.box_queries.shape == (2, 4, 4)
    # without noise, group g of image 0 holds label_enc(labels) at slots 2g, 2g+1;
    # image 1's second slot is padding
    torch.testing.assert_close(dn.label_queries[0, 2], label_enc.weight[1])
    torch.testing.assert_close(dn.box_queries[1, 2].sigmoid(), targets[1]["boxes"][0])
    assert torch.all(dn.label_queries[1, 1] == 0)
    m = dn.attn_mask
    assert m.shape == (7, 7)
    assert m[4:, :4].all() and not m[4:, 4:].any()  # matching queries never see DN queries
    assert not m[:2, :2].any() and m[:2, 2:4].all() and m[2:4, :2].all()  # groups are isolated
    assert not m[:4, 4:].any()  # DN queries see the matching queries
    idx = dn_indices(dn)
    assert idx[0][0].tolist() == [0, 1, 2, 3] and idx[0][1].tolist() == [0, 1, 0, 1]
    assert idx[1][0].tolist() == [0, 2] and idx[1][1].tolist() == [0, 0]
    assert (
        prepare_dn_queries(
            [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}], label_enc, 3, 5, 0.4
        )
        is None
    )


# ---------------------------------------------------------------- tiny model behaviour


def _maskdino(name: str, num_classes: int, **overrides: Any) -> MaskDINO:
    model = build_model(name, num_classes=num_classes, **overrides)
    assert isinstance(model, MaskDINO)
    return model


def _tiny(num_classes: int = 3, seed: int = 0, **overrides: Any) -> MaskDINO:
    torch.manual_seed(seed)
    return _maskdino("maskdino_tiny", num_classes, **overrides)


def test_adapter_sites_are_wired_and_keyless(make_sample: Sample) -> None:
    model = _tiny()
    cfg = model.cfg
    sites = {n: m for n, m in model.named_modules() if isinstance(m, AdapterSite)}
    enc = [n for n in sites if ".encoder.layers." in n]
    dec_self = [n for n in sites if ".decoder.layers." in n and n.endswith("self_attn_site")]
    dec_cross = [n for n in sites if ".decoder.layers." in n and n.endswith("cross_attn_site")]
    assert len(enc) == cfg.enc_layers and all(n.endswith("self_attn_site") for n in enc)
    assert len(dec_self) == len(dec_cross) == cfg.dec_layers
    assert not any("site" in k for k in model.state_dict())

    class Shift(nn.Module):
        """An adapter whose delta varies over channels (a uniform shift would vanish in LayerNorm)."""

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return torch.linspace(-1.0, 1.0, h.shape[-1]).expand_as(h)

    model.eval()
    batch = [make_sample(0)]
    with torch.no_grad():
        base = model(batch)[0]["instances"].scores
        for name in (enc[0], dec_cross[-1], dec_self[-1]):
            sites[name].adapters.append(Shift())
            changed = model(batch)[0]["instances"].scores
            sites[name].adapters.pop(0)
            assert not torch.allclose(base, changed), f"{name} is not on the forward path"


def test_tiny_train_step_forward_backward(make_sample: Sample) -> None:
    model = _tiny()
    model.train()
    batch = [make_sample(0), make_sample(1)]
    losses = model(batch)
    cfg = model.cfg
    # 5 terms x (final + interm + dec_layers aux) + 5 x (dn final + dn aux)
    assert len(losses) == 5 * (2 + cfg.dec_layers) + 5 * (1 + cfg.dec_layers)
    assert {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_bbox",
        "loss_giou",
        "loss_ce_interm",
        "loss_mask_dn",
        f"loss_giou_dn_{cfg.dec_layers - 1}",
    } <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == [], no_grad
    # a batch whose images have no objects still trains (no DN queries, no matches)
    empty = make_sample(2)
    empty["instances"] = empty["instances"][[]]
    empty_losses = model([empty])
    assert set(empty_losses) == set(losses)  # DN terms are zeros, so the loss names stay fixed
    assert torch.isfinite(sum(empty_losses.values()))


def test_tiny_train_step_is_fast(make_sample: Sample) -> None:
    model = _tiny()
    model.train()
    batch = [make_sample(0), make_sample(1)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []  # one intra-op thread (conftest): on a shared 2-core box, 2 threads spin-wait badly
    for _ in range(5):
        t0 = time.perf_counter()
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    # budget: well under a second on 2 idle cores (measured ~0.1 s); generous for a loaded CI box
    assert statistics.median(times[1:]) < 1.5, times


def test_tiny_overfits_two_images(make_sample: Sample) -> None:
    model = _tiny(seed=1)
    model.train()
    batch = [make_sample(10), make_sample(11)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    first, last = statistics.mean(history[:3]), statistics.mean(history[-5:])
    assert last < 0.35 * first, (first, last)
    # and it has learnt the objects: the top prediction of each object's class covers its mask
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    for out, sample in zip(outputs, batch):
        pred, gt = out["instances"], sample["instances"]
        for k in range(len(gt)):
            mask = gt.gt_masks.tensor[k]
            scores = torch.where(pred.pred_classes == gt.gt_classes[k], pred.scores, -1.0)
            best = pred.pred_masks[scores.argmax()]
            iou = (best & mask).sum() / (best | mask).sum()
            assert iou > 0.8, (k, float(iou))


def test_tiny_eval_outputs_at_original_size(make_sample: Sample) -> None:
    model = _tiny()
    model.eval()
    sample = make_sample(0, size=96)
    sample["image"] = sample["image"][:, :, :80]  # 96 x 80, padded to 96 x 96 inside the model
    sample.update(height=150, width=125)
    del sample["instances"]
    with torch.no_grad():
        (out,) = model([sample])
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (150, 125)
    k = min(model.cfg.test_topk_per_image, model.cfg.num_queries * 3)
    assert len(inst) == k
    assert inst.pred_masks.shape == (k, 150, 125) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes.tensor.shape == (k, 4)
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()


def test_instance_inference_topk_and_mask_boxes() -> None:
    # 2 queries x 3 classes; the two best (query, class) pairs are (1, 2) and (0, 0)
    cls = torch.tensor([[2.0, -5.0, -5.0], [-5.0, -5.0, 3.0]])
    masks = torch.full((2, 6, 8), -4.0)
    masks[0, 1:3, 2:5] = 4.0
    masks[1, 0:6, 0:1] = 4.0
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    inst = instance_inference(cls, masks, boxes, topk=2)
    order = inst.scores.argsort(descending=True)
    assert inst.pred_classes[order].tolist() == [2, 0]
    torch.testing.assert_close(inst.pred_boxes.tensor[order], boxes[[1, 0]])
    mean_prob = torch.sigmoid(torch.tensor(4.0))
    expected = torch.sigmoid(torch.tensor([3.0, 2.0])) * mean_prob
    torch.testing.assert_close(inst.scores[order], expected)
    from_masks = instance_inference(cls, masks, boxes, topk=2, box_source="mask")
    order = from_masks.scores.argsort(descending=True)
    torch.testing.assert_close(
        from_masks.pred_boxes.tensor[order], torch.tensor([[0.0, 0.0, 1.0, 6.0], [2.0, 1.0, 5.0, 3.0]])
    )


def test_gt_boxes_default_from_masks(make_sample: Sample) -> None:
    model = _tiny()
    sample = make_sample(0)
    inst = sample["instances"]
    plain = Instances(inst.image_size, gt_classes=inst.gt_classes, gt_masks=inst.gt_masks.tensor)
    from detectron2.structures import ImageList

    images = ImageList.from_tensors([sample["image"].float()], 32)
    with_boxes = model.prepare_targets([inst], images)[0]["boxes"]
    derived = model.prepare_targets([plain], images)[0]["boxes"]
    torch.testing.assert_close(with_boxes, derived)


# ---------------------------------------------------------------- Swin backbone


def _reference_shifted_window_block(block: SwinBlock, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Swin block computed globally: attention over all tokens with -inf across windows and the
    -100 region penalty, instead of window partitioning (independent of the windowing plumbing)."""
    ws, s = block.window_size, block.shift_size
    attn = block.attn
    b, n, c = x.shape
    heads = attn.num_heads
    y = block.norm1(x).view(b, h, w, c)
    y = torch.roll(y, shifts=(-s, -s), dims=(1, 2)).reshape(b, n, c)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    same_window = ((ii[:, None] // ws) == (ii[None] // ws)) & ((jj[:, None] // ws) == (jj[None] // ws))

    def region(v: torch.Tensor, size: int) -> torch.Tensor:
        return (v >= size - ws).long() + (v >= size - s).long() if s else torch.zeros_like(v)

    label = region(ii, h) * 3 + region(jj, w)
    # relative offset inside a window (valid where same_window holds)
    di = ii[:, None] % ws - ii[None] % ws
    dj = jj[:, None] % ws - jj[None] % ws
    bias = attn.relative_position_bias_table[(di + ws - 1) * (2 * ws - 1) + (dj + ws - 1)]  # (n, n, heads)
    logits_bias = bias.permute(2, 0, 1) + torch.where(label[:, None] == label[None], 0.0, -100.0)
    logits_bias = logits_bias.masked_fill(~same_window, float("-inf"))
    qkv = attn.qkv(y).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * attn.scale, qkv[1], qkv[2]
    out = ((q @ k.transpose(-2, -1) + logits_bias).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    out = attn.proj(out).view(b, h, w, c)
    out = torch.roll(out, shifts=(s, s), dims=(1, 2)).reshape(b, n, c)
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_matches_global_masked_attention(shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=8, num_heads=2, window_size=4, shift_size=shift, drop_path=0.0).eval()
    nn.init.normal_(block.attn.relative_position_bias_table)
    stage = SwinStage(8, 2, 2, 4, [0.0, 0.0], downsample=False)
    mask = stage._attn_mask(8, 8, torch.device("cpu"))
    x = torch.randn(2, 64, 8)
    torch.testing.assert_close(block(x, 8, 8, mask), _reference_shifted_window_block(block, x, 8, 8))


def test_small_swin_backbone_output_shapes() -> None:
    torch.manual_seed(0)
    net = SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 96, 64))
    spec = net.output_shape()
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert out[name].shape == (1, 16 * 2**i, 96 // 4 // 2**i, 64 // 4 // 2**i)
        assert spec[name].channels == 16 * 2**i and spec[name].stride == 4 * 2**i


def test_deformable_parts_follow_autocast_and_sample_in_fp32(make_sample: Sample, monkeypatch) -> None:
    # upstream forced the pixel decoder and the decoder layers to fp32 under autocast; now they run
    # under it and MSDeformAttn keeps the sampling locations and the softmax in fp32 (on the CPU
    # paths the sampling too; on the GPU the Triton kernels sample bf16: tests/kernels)
    import kernels.msda as msda

    seen: list[tuple[bool, torch.dtype, torch.dtype, torch.dtype]] = []
    real = msda.ms_deform_attn

    def spy(value, shapes, starts, locations, weights, backend="auto"):
        seen.append((torch.is_autocast_enabled("cpu"), value.dtype, locations.dtype, weights.dtype))
        return real(value, shapes, starts, locations, weights, backend=backend)

    monkeypatch.setattr(msda, "ms_deform_attn", spy)
    model = _tiny().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inst = model([make_sample(0)])[0]["instances"]
    assert len(seen) >= 2  # encoder and decoder layers
    assert set(seen) == {(True, torch.float32, torch.float32, torch.float32)}
    assert torch.isfinite(inst.scores).all()
