"""The training loop shared by trials and pretraining.

- Optimizer: AdamW over the parameters with ``requires_grad``; no weight decay on 1-d tensors
  (norms, biases), as is usual for transformers.
- LR: linear warm-up from ``warmup_factor * lr`` over ``warmup_iters``, then ``cosine`` (to
  ``min_lr_factor * lr``), ``step`` (x ``gamma`` at each of ``steps``, fractions of the run) or
  ``constant``.
- Gradient clipping by global L2 norm (``grad_clip`` <= 0 disables it).
- Mixed precision: autocast bf16 on CUDA (no loss scaling is needed for bf16); fp32 on CPU.
- Divergence: a non-finite total loss or gradient norm raises :class:`DivergenceError` naming
  the iteration, before the optimizer step, so a diverged run never reports a metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.errors import UserError

__all__ = [
    "SCHEDULES",
    "OptimConfig",
    "DivergenceError",
    "TrainResult",
    "build_optimizer",
    "build_lr_lambda",
    "build_scheduler",
    "train_loop",
]

SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer + schedule settings. ``steps`` are fractions of ``iterations`` (step schedule)."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    schedule: str = "cosine"
    min_lr_factor: float = 0.01
    steps: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    grad_clip: float = 1.0

    def validate(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.warmup_iters < 0:
            raise UserError(f"warmup_iters must be >= 0, got {self.warmup_iters!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if any(not 0 < s < 1 for s in self.steps):
            raise UserError(f"steps must be fractions in (0, 1), got {list(self.steps)}")


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient. ``iteration`` is 1-based."""

    def __init__(self, iteration: int, what: str, value: float):
        self.iteration = iteration
        self.what = what
        self.value = value
        super().__init__(f"diverged: non-finite {what} ({value}) at iteration {iteration}")


@dataclass
class TrainResult:
    iterations: int  # iterations completed
    final_loss: float  # mean total loss over the last min(10, iterations) iterations
    seconds: float
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    if not decay and not no_decay:
        raise UserError("model has no trainable parameters (check the PEFT method config)")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def build_lr_lambda(cfg: OptimConfig, iterations: int) -> Callable[[int], float]:
    """Multiplier of the base lr at (0-based) step ``it``."""
    warm = min(cfg.warmup_iters, iterations)
    milestones = sorted(int(round(s * iterations)) for s in cfg.steps)

    def factor(it: int) -> float:
        if it < warm:
            alpha = it / warm
            return cfg.warmup_factor * (1 - alpha) + alpha
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return float(cfg.gamma ** sum(it >= m for m in milestones))
        span = max(iterations - warm, 1)
        progress = min((it - warm) / span, 1.0)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, iterations: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, build_lr_lambda(cfg, iterations))


def _to_device(batch: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    if device.type == "cpu":
        return batch
    out = []
    for d in batch:
        d = dict(d)
        d["image"] = d["image"].to(device, non_blocking=True)
        if "instances" in d:
            d["instances"] = d["instances"].to(device)
        out.append(d)
    return out


def train_loop(
    model: nn.Module,
    batches: Iterator[list[dict[str, Any]]],
    iterations: int,
    cfg: OptimConfig,
    device: torch.device,
    *,
    callback: Callable[[int, float], bool | None] | None = None,
    callback_every: int = 0,
    inject_nan_at: int | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    start_iteration: int = 0,
    losses: list[float] | None = None,
) -> TrainResult:
    """Train ``model`` (detectron2 convention: train mode returns a dict of losses) for ``iterations``.

    ``callback(iteration, mean_recent_loss)`` runs after every ``callback_every`` iterations (and
    after the last); returning True stops training early. ``inject_nan_at`` (1-based, debugging
    and tests) replaces the loss at that iteration with NaN to exercise divergence handling.
    Raises :class:`DivergenceError` on a non-finite loss or gradient norm.

    Resume: pass the ``optimizer`` and ``scheduler`` of the interrupted run (state loaded) and
    ``start_iteration`` (iterations already done); the loop runs iterations
    ``start_iteration + 1 .. iterations`` and ``batches`` must yield the batches from there on.
    Without them a fresh AdamW (:func:`build_optimizer`) and schedule are built. ``losses``, when
    given, is appended to in place (one value per iteration), so a caller can checkpoint it
    mid-run; ``TrainResult.losses`` is that same list.
    """
    cfg.validate()
    if iterations < 0:
        raise UserError(f"iterations must be >= 0, got {iterations}")
    if not 0 <= start_iteration <= iterations:
        raise UserError(f"start_iteration must be in [0, {iterations}], got {start_iteration}")
    model.train()
    if optimizer is None:
        optimizer = build_optimizer(model, cfg)
    if scheduler is None:
        scheduler = build_scheduler(optimizer, cfg, iterations)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    use_amp = device.type == "cuda"
    if losses is None:
        losses = []
    t0 = time.perf_counter()
    done = start_iteration
    stopped = False
    for it in range(start_iteration + 1, iterations + 1):
        batch = _to_device(next(batches), device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss_dict = model(batch)
        loss = sum(v.float() for v in loss_dict.values())
        assert isinstance(loss, torch.Tensor)
        if inject_nan_at is not None and it == inject_nan_at:
            loss = loss * float("nan")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(it, "loss", value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # max_norm=inf still returns the total norm (needed for the divergence check).
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
        if not math.isfinite(norm):
            raise DivergenceError(it, "gradient norm", norm)
        optimizer.step()
        scheduler.step()
        losses.append(value)
        done = it
        if log is not None and log_every and (it % log_every == 0 or it == iterations):
            # Final-layer terms only (aux/dn/interm copies would drown the line).
            parts = " ".join(
                f"{k}={float(v.detach()):.3f}"
                for k, v in sorted(loss_dict.items())
                if not any(k.endswith(s) for s in ("_dn", "_interm")) and not k[-1].isdigit()
            )
            log(f"iter {it}/{iterations} loss={value:.4f} lr={scheduler.get_last_lr()[0]:.2e} {parts}")
        if callback is not None and callback_every and (it % callback_every == 0 or it == iterations):
            recent = losses[-callback_every:]
            if callback(it, sum(recent) / len(recent)) is True:
                stopped = it < iterations
                break
    tail = losses[-10:]
    return TrainResult(
        iterations=done,
        final_loss=sum(tail) / len(tail) if tail else math.nan,
        seconds=time.perf_counter() - t0,
        losses=losses,
        stopped_early=stopped,
    )
