"""Inject LoRA into a model, merge it for inference, unmerge it.

One merge path for every LoRA layer: ``W <- W + (alpha / rank) * B A`` on the adapted weight rows
(``LoRALinear.merge`` / ``LoRAMultiheadAttention.merge``). :func:`merge_lora` keeps the LoRA
modules (reversible with :func:`unmerge_lora`); :func:`merge_for_inference` then replaces them by
plain ``nn.Linear`` / ``nn.MultiheadAttention`` so the model has exactly the base's structure,
state_dict keys and parameter count.
"""

from __future__ import annotations

import re

from torch import nn

from models.errors import UserError
from models.peft.lora.config import RAW_TARGET_PREFIX, LoraConfig
from models.peft.lora.layer import LoRALinear, LoRAMultiheadAttention
from models.peft.targets import LoraTargetRule, PeftSpec

__all__ = [
    "apply_lora",
    "resolve_lora_targets",
    "lora_modules",
    "merge_lora",
    "unmerge_lora",
    "merge_for_inference",
    "set_submodule",
]

LoraModule = LoRALinear | LoRAMultiheadAttention


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def resolve_lora_targets(
    model: nn.Module, config: LoraConfig, spec: PeftSpec
) -> list[tuple[str, LoraTargetRule]]:
    """(module name, rule) for every module LoRA will wrap, in model order.

    Empty ``config.targets`` means ``spec.default_lora_targets`` (the family's recipe). A named set
    that selects no module, or a module selected twice with different rules, is a UserError naming
    ``lora.targets``.
    """
    targets = config.targets or spec.default_lora_targets
    rules: list[tuple[str, LoraTargetRule]] = []
    for target in targets:
        if target.startswith(RAW_TARGET_PREFIX):
            rules.append(
                (target, LoraTargetRule(target[len(RAW_TARGET_PREFIX) :], "linear", config.mha_slices))
            )
        elif target in spec.lora_targets:
            rules.extend((target, r) for r in spec.lora_targets[target])
        else:
            raise UserError(
                f"lora.targets: {target!r} is not a target set of model family {spec.family!r}; "
                f"allowed: {', '.join(sorted(spec.lora_targets))}"
            )
    compiled = [(t, r, re.compile(r.pattern)) for t, r in rules]
    hits: dict[str, tuple[str, LoraTargetRule]] = {}
    used: set[str] = set()
    for name, module in model.named_modules():
        for target, rule, pattern in compiled:
            if not pattern.fullmatch(name):
                continue
            if isinstance(module, LoRALinear | LoRAMultiheadAttention):
                raise ValueError(f"{name} already carries LoRA; apply a method to an unadapted model")
            if isinstance(module, nn.MultiheadAttention):
                resolved = LoraTargetRule(rule.pattern, "mha", rule.slices or config.mha_slices)
            elif isinstance(module, nn.Linear):
                parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
                if isinstance(parent, nn.MultiheadAttention):
                    # MultiheadAttention reads out_proj.weight directly and never calls its
                    # forward, so a LoRA there would be silently ignored.
                    raise UserError(f"lora.targets: {target!r} hits {name}, inside a MultiheadAttention")
                if rule.kind == "mha":
                    raise ValueError(
                        f"target set {target!r} expects MultiheadAttention at {name}, got Linear"
                    )
                resolved = LoraTargetRule(rule.pattern, "linear")
            else:
                # a regex may also match containers (e.g. 'layers.0'); only leaves are targets
                continue
            if name in hits and hits[name][1] != resolved:
                raise UserError(f"lora.targets: module {name} selected twice with different slices")
            hits[name] = (target, resolved)
            used.add(target)
    unused = [t for t in targets if t not in used]
    if unused:
        raise UserError(f"lora.targets: {unused[0]!r} selects no Linear/MultiheadAttention of this model")
    return [(name, rule) for name, (_, rule) in hits.items()]


def apply_lora(model: nn.Module, config: LoraConfig, spec: PeftSpec) -> list[str]:
    """Wrap every target in place; returns the wrapped module names."""
    targets = resolve_lora_targets(model, config, spec)
    for name, rule in targets:
        module = model.get_submodule(name)
        wrapped: nn.Module
        if rule.kind == "mha":
            assert isinstance(module, nn.MultiheadAttention)
            wrapped = LoRAMultiheadAttention.wrap(
                module, rule.slices, config.rank, config.alpha, config.dropout
            )
        else:
            assert isinstance(module, nn.Linear)
            wrapped = LoRALinear.wrap(module, config.rank, config.alpha, config.dropout)
        set_submodule(model, name, wrapped)
    return [name for name, _ in targets]


def lora_modules(model: nn.Module) -> list[tuple[str, LoraModule]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear | LoRAMultiheadAttention)]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA module in place (reversible); returns how many."""
    mods = lora_modules(model)
    for _, m in mods:
        m.merge()
    return len(mods)


def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora` (exact up to floating-point rounding)."""
    mods = lora_modules(model)
    for _, m in mods:
        m.unmerge()
    return len(mods)


def merge_for_inference(model: nn.Module) -> nn.Module:
    """Replace every LoRA module by its plain merged equivalent, in place; returns ``model``.

    Afterwards the LoRA parts are gone (no unmerge); adapters (if any) stay. The replacement
    keeps the base weight's requires_grad and the module's train/eval mode.
    """
    for name, module in lora_modules(model):
        plain: nn.Module
        if isinstance(module, LoRAMultiheadAttention):
            plain = module.to_plain()
        else:
            plain = module.to_linear()
            plain.weight.requires_grad_(module.weight.requires_grad)
            if plain.bias is not None and module.bias is not None:
                plain.bias.requires_grad_(module.bias.requires_grad)
            plain.train(module.training)
        set_submodule(model, name, plain)
    return model
