"""Feature statistics of domains under a base model: how selection finds a new domain's neighbours.

A sweep's caller records its domains' statistics when the sweep ends (:func:`record_sweep_stats`),
and pretraining's caller records the pretraining domain beside the new base
(:func:`record_pretrain_stats`); later ``peftsweep select`` runs read them back through
:mod:`search.selection.similarity`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.selection.shift import (
    FeatureStats,
    feature_stats,
    load_coco_images,
    pooled_backbone_features,
)
from search.selection.similarity import feature_key_for, record_domain_stats

__all__ = [
    "build_feature_model",
    "synthetic_images",
    "pretraining_domain",
    "domain_stats_from_images",
    "record_sweep_domains",
    "record_sweep_stats",
    "record_pretrain_stats",
]


# ----------------------------------------------------------------------------------------- features


def build_feature_model(model_name: str, base_checkpoint: str | None, device: str = "cpu") -> Any:
    """The base model whose backbone defines the feature space (class count is irrelevant here)."""
    import torch

    import models

    torch.manual_seed(0)  # a random-init backbone (no base) must still be the same every time
    model = models.build_model(model_name, 1)  # type: ignore[attr-defined]
    if base_checkpoint:
        from models.checkpoint import load_checkpoint

        load_checkpoint(model, base_checkpoint, num_classes=1)
    return model.to(device).eval()


def synthetic_images(domain: str, num: int, seed: int = 0, image_size: int = 128) -> list[Any]:
    """Images of a synthetic domain as uint8 (3, H, W) tensors (RGB)."""
    import torch

    from models.data.synthetic import generate_sample

    return [
        torch.from_numpy(generate_sample(domain, seed, i, image_size).image).permute(2, 0, 1).contiguous()
        for i in range(num)
    ]


def pretraining_domain(base_checkpoint: str | None) -> str:
    """The synthetic domain the base was pretrained on (``pretrain.json`` beside it), else ``source``."""
    if base_checkpoint:
        meta = Path(base_checkpoint).with_name("pretrain.json")
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                dom = (info.get("config") or {}).get("domain") or info.get("domain")
                if isinstance(dom, str) and dom:
                    return dom
            except (OSError, json.JSONDecodeError):
                pass
    return "source"


def domain_stats_from_images(model: Any, images: Sequence[Any], image_size: int = 128) -> FeatureStats:
    feats, levels = pooled_backbone_features(model, images, image_size=image_size)
    return feature_stats(feats, levels=levels)


def record_sweep_domains(
    output_dir: str | os.PathLike[str],
    domains: Sequence[Mapping[str, Any]],
    *,
    model_name: str,
    base_checkpoint: str | None,
    num_images: int = 64,
    image_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Record feature statistics of a sweep's domains under ``output_dir/domain_stats``.

    For a sweep to call when it finishes. ``domains``: dicts like :class:`search.config.DomainSpec`
    dumps (``name``, ``synthetic``, ``train_json``, ``train_images``). Returns the recorded names.
    """
    model = build_feature_model(model_name, base_checkpoint)
    done: list[str] = []
    for d in domains:
        name = str(d["name"])
        if d.get("synthetic", True):
            images = synthetic_images(name, num_images, seed, image_size)
        else:
            images = list(load_coco_images(str(d["train_json"]), str(d["train_images"]), limit=num_images))
        stats = domain_stats_from_images(model, images, image_size)
        key = feature_key_for(model_name, base_checkpoint, stats.levels)
        record_domain_stats(output_dir, name, stats, feature_key=key, source=f"sweep {output_dir}")
        done.append(name)
    return done


def record_sweep_stats(output_dir: str | os.PathLike[str], config: Any) -> list[str]:
    """After a sweep of real model trials: its domains' statistics under ``output_dir/domain_stats``.

    Later ``peftsweep select`` runs find their nearest earlier domains through these statistics of
    the base model's backbone features. Sweeps of stand-in trial functions (tests, benchmarks) have
    no such backbone and record nothing. ``config``: the sweep's :class:`search.config.SweepConfig`.
    """
    from search.config import TrialSettings

    if config.trial.function != TrialSettings().function:
        return []
    return record_sweep_domains(
        output_dir,
        [d.model_dump() for d in config.domains],
        model_name=config.model.name,
        base_checkpoint=config.model.base_checkpoint,
    )


def record_pretrain_stats(out: str | os.PathLike[str], log: Any = print) -> dict[str, Any]:
    """After ``peftsweep pretrain``: the pretraining domain's statistics beside the new base.

    Reads the run's ``pretrain.json``, records the statistics under ``out/domain_stats`` and adds
    their summary to ``pretrain.json`` (``domain_stats``: domains, error, seconds). A failure is
    logged and noted there: the checkpoint is already written and stays usable (selection then
    regenerates the statistics).
    """
    import time

    from models.data.coco import atomic_write_json
    from models.pretrain import CHECKPOINT_NAME, REPORT_NAME

    folder = Path(out)
    summary = json.loads((folder / REPORT_NAME).read_text())
    cfg = summary["config"]
    t0 = time.perf_counter()
    try:
        names = record_sweep_domains(
            folder,
            [{"name": cfg["domain"], "synthetic": True}],
            model_name=cfg["model"],
            base_checkpoint=str(folder / CHECKPOINT_NAME),
            image_size=cfg["image_size"],
            seed=cfg["seed"],
        )
        stats: dict[str, Any] = {"domains": names, "error": "", "seconds": time.perf_counter() - t0}
        log(f"pretrain: recorded {', '.join(names)} feature statistics in {folder / 'domain_stats'}")
    except Exception as exc:  # noqa: BLE001 - the checkpoint is written; statistics are an optional extra
        msg = f"{exc.__class__.__name__}: {exc}"
        log(f"pretrain: WARNING: could not record {cfg['domain']} feature statistics ({msg})")
        stats = {"domains": [], "error": msg, "seconds": time.perf_counter() - t0}
    summary["domain_stats"] = stats
    atomic_write_json(folder / REPORT_NAME, summary)
    return stats
