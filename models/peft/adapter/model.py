"""Insert bottleneck adapters into a model's adapter sites."""

from __future__ import annotations

import re

import torch
from torch import nn

from models.errors import UserError
from models.layers import AdapterSite
from models.peft.adapter.config import AdapterConfig
from models.peft.adapter.layer import BottleneckAdapter
from models.peft.targets import PeftSpec

__all__ = ["apply_adapters", "resolve_sites", "site_width"]


def resolve_sites(model: nn.Module, config: AdapterConfig, spec: PeftSpec) -> list[tuple[str, AdapterSite]]:
    """(name, site) for every AdapterSite of the configured placements, in model order."""
    patterns = []
    for placement in config.placement:
        if placement not in spec.sites:
            raise UserError(
                f"adapter.placement: {placement!r} is not a site of model family {spec.family!r}; "
                f"allowed: {', '.join(spec.sites)}"
            )
        patterns.append((placement, re.compile(spec.sites[placement])))
    found: list[tuple[str, AdapterSite]] = []
    counts = dict.fromkeys(config.placement, 0)
    for name, module in model.named_modules():
        for placement, pattern in patterns:
            if pattern.fullmatch(name):
                if not isinstance(module, AdapterSite):
                    raise ValueError(
                        f"{name} (placement {placement}) is a {type(module).__name__}, not AdapterSite"
                    )
                counts[placement] += 1
                found.append((name, module))
                break
    for placement, n in counts.items():
        if n == 0:
            raise ValueError(f"placement {placement!r}: no AdapterSite matches {spec.sites[placement]!r}")
    return found


def site_width(model: nn.Module, site_name: str) -> int:
    """Hidden size at a site: the ``d_model``/``embed_dim`` of its sibling attention module.

    A site named ``<layer>.<x>_site`` sits after ``<layer>.<x>``; that module's width is read.
    """
    parent_name, _, child = site_name.rpartition(".")
    attn_name = child[: -len("_site")] if child.endswith("_site") else ""
    parent = model.get_submodule(parent_name) if parent_name else model
    attn = getattr(parent, attn_name, None)
    for attr in ("d_model", "embed_dim"):
        value = getattr(attn, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot infer the hidden size at {site_name}: no {attn_name}.d_model/embed_dim")


def apply_adapters(model: nn.Module, config: AdapterConfig, spec: PeftSpec) -> list[str]:
    """Fill every selected site with ``config.repetitions`` fresh adapters; returns the site names.

    New adapters take the device and dtype of the site's attention weights.
    """
    sites = resolve_sites(model, config, spec)
    for name, site in sites:
        if len(site.adapters):
            raise ValueError(f"{name} already holds adapters; apply a method to an unadapted model")
        d = site_width(model, name)
        if d % config.reduction != 0:
            raise UserError(f"adapter.reduction must divide the hidden size {d}, got {config.reduction}")
        ref = _reference_tensor(model, name)
        for _ in range(config.repetitions):
            adapter = BottleneckAdapter(d, config.reduction, config.activation)
            if ref is not None:
                adapter.to(device=ref.device, dtype=ref.dtype)
            adapter.train(site.training)
            site.adapters.append(adapter)
        site.residual = config.residual
    return [name for name, _ in sites]


def _reference_tensor(model: nn.Module, site_name: str) -> torch.Tensor | None:
    parent_name = site_name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    return next(iter(parent.parameters()), None)
