"""Training loop pieces and latency measurement on a toy detectron2-convention model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.latency import _percentile, measure_latency
from models.training import DivergenceError, OptimConfig, build_lr_lambda, build_optimizer, train_loop


class ToySegmenter(nn.Module):
    """Per-pixel foreground logit from a 3x3 conv; train: {"loss_mask"}, eval: one instance per image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.norm = nn.GroupNorm(1, 1)

    def forward(self, batched: list[dict[str, Any]]) -> Any:
        x = torch.stack([d["image"].float() / 255.0 for d in batched])
        logits = self.norm(self.conv(x))[:, 0]
        if self.training:
            target = torch.stack([d["target"] for d in batched]).float()
            return {
                "loss_mask": nn.functional.binary_cross_entropy_with_logits(logits, target),
                "loss_zero": logits.sum() * 0.0,
            }
        return [{"logits": lg} for lg in logits]


def _batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    while True:
        batch = []
        for _ in range(2):
            img = torch.randint(0, 60, (3, 16, 16), generator=g, dtype=torch.uint8)
            target = torch.zeros(16, 16, dtype=torch.bool)
            target[4:12, 4:12] = True
            img[0][target] = 250  # bright red square = the object
            batch.append({"image": img, "target": target, "height": 16, "width": 16})
        yield batch


def test_lr_schedules_match_their_formulas() -> None:
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_factor=0.01, schedule="cosine", min_lr_factor=0.0)
    f = build_lr_lambda(cfg, 110)
    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    step = build_lr_lambda(OptimConfig(schedule="step", steps=(0.5, 0.75), gamma=0.1), 100)
    assert [step(i) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert build_lr_lambda(OptimConfig(schedule="constant"), 10)(7) == 1.0


def test_optimizer_skips_frozen_and_decays_only_matrices() -> None:
    model = ToySegmenter()
    model.norm.requires_grad_(False)
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    groups = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert groups[0.1] == [model.conv.weight] and groups[0.0] == [model.conv.bias]
    model.requires_grad_(False)
    from models.errors import UserError

    with pytest.raises(UserError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())


def test_train_loop_learns_and_reports() -> None:
    torch.manual_seed(0)
    model = ToySegmenter()
    calls: list[tuple[int, float]] = []
    res = train_loop(
        model,
        _batches(),
        40,
        OptimConfig(lr=0.05, warmup_iters=5),
        torch.device("cpu"),
        callback=lambda it, loss: calls.append((it, loss)),
        callback_every=15,
    )
    assert res.iterations == 40 and len(res.losses) == 40
    assert [c[0] for c in calls] == [15, 30, 40]
    assert res.final_loss < 0.6 * res.losses[0]
    assert res.final_loss == pytest.approx(np.mean(res.losses[-10:]))


def test_callback_can_stop_early() -> None:
    res = train_loop(
        ToySegmenter(),
        _batches(),
        30,
        OptimConfig(),
        torch.device("cpu"),
        callback=lambda it, loss: it >= 10,
        callback_every=5,
    )
    assert res.iterations == 10 and res.stopped_early


def test_nan_injection_and_inf_gradients_raise_divergence() -> None:
    model = ToySegmenter()
    before = model.conv.weight.detach().clone()
    with pytest.raises(DivergenceError, match="iteration 3") as info:
        train_loop(model, _batches(), 10, OptimConfig(lr=0.1), torch.device("cpu"), inject_nan_at=3)
    assert info.value.iteration == 3 and math.isnan(info.value.value)
    assert not torch.equal(before, model.conv.weight)  # two steps were taken, then it stopped

    class NanGrad(ToySegmenter):
        def forward(self, batched):
            out = super().forward(batched)
            # sqrt at 0: the loss term is 0 (finite) but its gradient is not.
            out["loss_sqrt"] = torch.sqrt(self.conv.weight.abs() * 0.0).sum()
            return out

    with pytest.raises(DivergenceError, match="gradient norm"):
        train_loop(NanGrad(), _batches(), 3, OptimConfig(), torch.device("cpu"))


def test_bad_optim_config_is_a_user_error() -> None:
    from models.errors import UserError

    with pytest.raises(UserError, match="schedule"):
        train_loop(ToySegmenter(), _batches(), 1, OptimConfig(schedule="linear"), torch.device("cpu"))
    with pytest.raises(UserError, match="lr"):
        train_loop(ToySegmenter(), _batches(), 1, OptimConfig(lr=-1.0), torch.device("cpu"))


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 30):
        v = sorted(rng.uniform(0, 10, n).tolist())
        assert _percentile(v, 0.5) == pytest.approx(np.percentile(v, 50))
        assert _percentile(v, 0.9) == pytest.approx(np.percentile(v, 90))


def test_measure_latency_cpu() -> None:
    seen: list[tuple[int, ...]] = []

    class Probe(ToySegmenter):
        def forward(self, batched):
            assert not self.training and torch.is_inference_mode_enabled()
            seen.append(tuple(batched[0]["image"].shape))
            return super().forward(batched)

    model = Probe().train()
    res = measure_latency(model, (24, 40), "cpu", warmup=2, runs=5)
    assert len(seen) == 7 and seen[0] == (3, 24, 40)
    assert 0 < res.median_ms <= res.p90_ms
    assert res.device.startswith("cpu") and res.image_size == (24, 40)
    assert model.training  # flag restored
