"""Pretrain a small base model on the synthetic ``source`` domain (``peftsweep pretrain``).

The stand-in for an official pretrained checkpoint on machines without downloads: all
parameters are trained, the checkpoint is written with ``models.checkpoint.save_checkpoint``
and a ``pretrain.json`` next to it records the settings, wall time and the mask AP on held-out
source images (the ``val`` split, disjoint from training images).

The pretraining domain's feature statistics, which method selection uses as its reference
domain, are a step the caller runs afterwards (``peftsweep pretrain`` and ``demo`` do:
``search.selection.domain_stats.record_pretrain_stats``): models never import search.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.errors import UserError

__all__ = ["PretrainConfig", "pretrain", "CHECKPOINT_NAME", "REPORT_NAME"]

CHECKPOINT_NAME = "base.pt"
REPORT_NAME = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "maskdino_tiny"
    domain: str = "source"
    iterations: int = 3000
    batch_size: int = 4
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_iters: int = 50
    schedule: str = "cosine"
    grad_clip: float = 1.0
    image_size: int = 128
    num_train_images: int = 1000
    num_eval_images: int = 64
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    # torch CPU threads; 0 (the default) = every core. On a CPU shared with other busy processes,
    # --threads 1 can finish first: on the 2-core target with others running, 2 threads spent ~3x
    # the CPU per iteration of 1 thread (OpenMP spinning when cores are shared).
    threads: int = 0

    def validate(self) -> None:
        if self.iterations < 1:
            raise UserError(f"--iterations must be >= 1, got {self.iterations}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0, got {self.threads}")
        if self.num_train_images < 1 or self.num_eval_images < 1:
            raise UserError("--num-train-images and --num-eval-images must be >= 1")


def pretrain(
    out_dir: str | Path, cfg: PretrainConfig, log: Any = print, progress: str = "auto"
) -> dict[str, Any]:
    """Train, evaluate on held-out source images, save ``base.pt`` + ``pretrain.json``; return the json.

    ``cfg.threads`` applies for the duration of the call (the previous setting is restored).
    ``progress``: the iterations' bar / plain lines with ETA (:mod:`models.progress` mode; "off"
    shows none).
    """
    import torch

    cfg.validate()
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        # On a shared or oversubscribed CPU, fewer threads beat OpenMP's spinning (see PretrainConfig).
        torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(Path(out_dir), cfg, log, progress)
    finally:
        torch.set_num_threads(threads_before)


def _pretrain(out: Path, cfg: PretrainConfig, log: Any, progress: str) -> dict[str, Any]:
    import torch

    import models
    from models.checkpoint import save_checkpoint
    from models.data.coco import atomic_write_json
    from models.data.mapper import InstanceMapper, batch_iterator, build_augmentations
    from models.data.register import get_class_names, get_dataset_dicts, register_synthetic
    from models.evaluation import evaluate_model
    from models.latency import device_name
    from models.progress import Progress
    from models.training import OptimConfig, train_loop
    from models.trial.data import resolve_device

    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    train_name = register_synthetic(cfg.domain, "train", cfg.seed, cfg.num_train_images, cfg.image_size)
    val_name = register_synthetic(cfg.domain, "val", cfg.seed, cfg.num_eval_images, cfg.image_size)
    classes = get_class_names(train_name)
    train_dicts = get_dataset_dicts(train_name, drop_empty=True)
    val_dicts = get_dataset_dicts(val_name)

    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model, len(classes)).to(device)
    mapper = InstanceMapper(True, build_augmentations(True, cfg.image_size))
    optim = OptimConfig(
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_iters=cfg.warmup_iters,
        schedule=cfg.schedule,
        grad_clip=cfg.grad_clip,
    )
    log(
        f"pretrain: {cfg.model} on {cfg.domain} ({len(train_dicts)} images, {len(classes)} classes), "
        f"{cfg.iterations} iterations, batch {cfg.batch_size}, lr {cfg.lr}, device {device}"
    )
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU time: a load-independent cost figure on shared machines
    with Progress(progress) as bar:
        bar.add("pretrain", f"pretrain {cfg.model}", total=cfg.iterations)

        def tick(it: int, loss: float) -> None:
            bar.update("pretrain", completed=it, info=f"loss {loss:.3f}")

        result = train_loop(
            model,
            batch_iterator(train_dicts, mapper, cfg.batch_size, cfg.seed),
            cfg.iterations,
            optim,
            device,
            callback=tick,
            callback_every=1,
            log=log,
            log_every=cfg.log_every,
        )
    log(f"pretrain: evaluating on {len(val_dicts)} held-out {cfg.domain} images")
    eval_mapper = InstanceMapper(False, build_augmentations(False, cfg.image_size))
    metrics = evaluate_model(model, val_dicts, eval_mapper, classes, device=device)
    minutes = (time.perf_counter() - t0) / 60.0
    ckpt = out / CHECKPOINT_NAME
    meta = {"model": cfg.model, "domain": cfg.domain, "classes": classes, "iterations": result.iterations}
    save_checkpoint(model, ckpt, meta)
    summary = {
        "checkpoint": str(ckpt),
        "config": asdict(cfg),
        "classes": classes,
        "iterations": result.iterations,
        "final_loss": result.final_loss,
        "train_minutes": result.seconds / 60.0,
        "total_minutes": minutes,
        "cpu_minutes": (time.process_time() - c0) / 60.0,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "eval": metrics.to_dict(),
    }
    atomic_write_json(out / REPORT_NAME, summary)
    log(
        f"pretrain: done in {minutes:.1f} min, final loss {result.final_loss:.3f}, "
        f"held-out AP {metrics.ap:.1f} (AP50 {metrics.ap50:.1f}); wrote {ckpt} and {out / REPORT_NAME}"
    )
    return json.loads(json.dumps(summary))
