"""Inject a peft-library method into a model, find its layers, merge / unmerge / unload them.

Injection is peft's ``inject_adapter_in_model`` on the exact module names of
:func:`models.peft.library.targets.peft_target_names`: the model object stays the detectron2 model
(no ``PeftModel`` wrapper, whose ``base_model.model.`` prefix would rename every key), peft wraps
each target as ``<name>.base_layer`` plus its adapter tensors, and records its config in
``model.peft_config`` (what ``get_peft_model_state_dict`` reads when saving).

Merging uses each peft layer's own ``merge`` / ``unmerge``; :func:`merge_for_inference` then puts
the merged base layer back in place of the peft layer (what peft's ``merge_and_unload`` does) and
packs split attentions into ``nn.MultiheadAttention``: the deployed model has the base's structure,
official state_dict keys and parameter count.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch
from torch import nn

from models.errors import UserError
from models.peft.library.config import LibraryConfig
from models.peft.library.targets import peft_target_names, resolve_targets
from models.peft.split_attention import SplitAttention, pack_split_attentions
from models.peft.targets import PeftSpec

__all__ = [
    "BASE_DIGESTS_ATTR",
    "inject_library_method",
    "peft_layers",
    "merge_peft_layers",
    "unmerge_peft_layers",
    "merge_for_inference",
    "tensor_digest",
]

# Digests of base weights taken before an initialisation that rewrites them (PiSSA, OLoRA): the
# base fingerprint (models.peft.artifact) must describe the base, not the residual left behind.
BASE_DIGESTS_ATTR = "_peft_base_digests"
_SAMPLES = 4096


def tensor_digest(t: torch.Tensor) -> str:
    """Cheap content hash: up to 4096 evenly strided elements, the float64 sum and sum of squares."""
    flat = t.detach().reshape(-1).to("cpu", torch.float64)
    step = max(1, flat.numel() // _SAMPLES)
    h = hashlib.sha256(flat[::step][:_SAMPLES].numpy().tobytes())
    h.update(repr((float(flat.sum()), float((flat * flat).sum()))).encode())
    return h.hexdigest()


def inject_library_method(model: nn.Module, config: LibraryConfig, spec: PeftSpec) -> list[str]:
    """Adapt the targets of ``config`` with peft, in place; returns the adapted module names."""
    from peft import inject_adapter_in_model

    names = peft_target_names(model, resolve_targets(model, config, spec))
    weights: list[torch.Tensor] = [model.get_submodule(n).weight for n in names]  # type: ignore[misc]
    on_meta = any(w.device.type == "meta" for w in weights)
    if config.modifies_base and on_meta:
        # shapes only (parameter counting): a data-dependent init (SVD, QR) has no data to read
        # and gives the same shapes as the default one
        config = dataclasses.replace(config, init="default")  # type: ignore[call-arg]
    elif config.modifies_base:
        digests = {f"{n}.weight": tensor_digest(w) for n, w in zip(names, weights, strict=True)}
        object.__setattr__(model, BASE_DIGESTS_ATTR, digests)
    if getattr(config, "use_dora", False) and not on_meta:
        for name, w in zip(names, weights, strict=True):
            if bool((w.detach().norm(dim=1) == 0).any()):
                # DoRA divides by each row's norm: a zero row has no direction (NaN outputs)
                raise UserError(
                    f"{config.method}.use_dora: {name} has an all-zero weight row (DoRA needs a trained base)"
                )
    inject_adapter_in_model(config.peft_config(names), model)
    return names


def peft_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """(name, layer) of every peft tuner layer in ``model`` (outermost only), in model order.

    A layer is a ``peft.tuners.tuners_utils.BaseTunerLayer`` (``merge``, ``unmerge``, ``merged``,
    ``get_base_layer``); typed ``Any`` because peft's module attributes are not typed.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    out: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and not any(name.startswith(f"{n}.") for n, _ in out):
            out.append((name, module))
    return out


def merge_peft_layers(model: nn.Module) -> int:
    """Merge every peft layer in place (reversible with :func:`unmerge_peft_layers`); returns how many."""
    layers = peft_layers(model)
    for _, layer in layers:
        if not layer.merged:
            layer.merge()
    return len(layers)


def unmerge_peft_layers(model: nn.Module) -> int:
    """Undo :func:`merge_peft_layers` (exact up to floating-point rounding)."""
    layers = peft_layers(model)
    for _, layer in layers:
        if layer.merged:
            layer.unmerge()
    return len(layers)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def merge_for_inference(model: nn.Module) -> nn.Module:
    """Merge every peft layer and put its base layer back; pack split attentions; returns ``model``.

    Afterwards no adapter layer is left (no unmerge); sequential adapters (if any) stay. Each base
    layer keeps its own requires_grad and the layer's train/eval mode.
    """
    for name, layer in peft_layers(model):
        if not layer.merged:
            layer.merge()
        base = layer.get_base_layer()
        base.train(layer.training)
        _set_submodule(model, name, base)
    if any(isinstance(m, SplitAttention) for m in model.modules()):
        pack_split_attentions(model)
    return model
