"""Target sets -> the module names peft adapts.

A ``linear`` target is an ``nn.Linear`` and peft adapts it as is. A MultiheadAttention target is
split (:func:`models.peft.split_attention.split_attention`) and peft adapts only the
``<name>.q_proj`` / ``<name>.v_proj`` of the named slices: the paper's q, v (not k) recipe, which
peft's own MultiheadAttention layer (all of in_proj plus out_proj) cannot express.
"""

from __future__ import annotations

import re

from torch import nn

from models.errors import UserError
from models.peft.library.config import RAW_TARGET_PREFIX, LibraryConfig
from models.peft.split_attention import SplitAttention, split_attention
from models.peft.targets import LoraTargetRule, PeftSpec

__all__ = ["resolve_targets", "peft_target_names"]


def _is_adapted(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer | SplitAttention)


def resolve_targets(
    model: nn.Module, config: LibraryConfig, spec: PeftSpec
) -> list[tuple[str, LoraTargetRule]]:
    """(module name, rule) for every module the method adapts, in model order.

    Empty ``config.targets`` means ``spec.default_lora_targets`` (the family's recipe). A named set
    that selects no module, or a module selected twice with different rules, is a UserError naming
    ``<method>.targets``. A resolved rule has kind ``mha`` (with its slices) or ``linear``.
    """
    field = f"{config.method}.targets"
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
                f"{field}: {target!r} is not a target set of model family {spec.family!r}; "
                f"allowed: {', '.join(sorted(spec.lora_targets))}"
            )
    compiled = [(t, r, re.compile(r.pattern)) for t, r in rules]
    hits: dict[str, tuple[str, LoraTargetRule]] = {}
    used: set[str] = set()
    for name, module in model.named_modules():
        for target, rule, pattern in compiled:
            if not pattern.fullmatch(name):
                continue
            if _is_adapted(module):
                raise ValueError(f"{name} already carries an adapter; apply a method to an unadapted model")
            if isinstance(module, nn.MultiheadAttention):
                resolved = LoraTargetRule(rule.pattern, "mha", rule.slices or config.mha_slices)
            elif isinstance(module, nn.Linear):
                parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
                if isinstance(parent, nn.MultiheadAttention):
                    # MultiheadAttention reads out_proj.weight directly and never calls its
                    # forward, so an adapter there would be silently ignored.
                    raise UserError(f"{field}: {target!r} hits {name}, inside a MultiheadAttention")
                if rule.kind == "mha":
                    raise ValueError(f"target set {target!r} expects MultiheadAttention at {name}")
                resolved = LoraTargetRule(rule.pattern, "linear")
            else:
                # a regex may also match containers (e.g. 'layers.0'); only leaves are targets
                continue
            if name in hits and hits[name][1] != resolved:
                raise UserError(f"{field}: module {name} selected twice with different slices")
            hits[name] = (target, resolved)
            used.add(target)
    unused = [t for t in targets if t not in used]
    if unused:
        raise UserError(f"{field}: {unused[0]!r} selects no Linear/MultiheadAttention of this model")
    return [(name, rule) for name, (_, rule) in hits.items()]


def peft_target_names(model: nn.Module, resolved: list[tuple[str, LoraTargetRule]]) -> list[str]:
    """Exact module names for peft's ``target_modules``; splits every MultiheadAttention target in place."""
    names: list[str] = []
    for name, rule in resolved:
        if rule.kind == "mha":
            split_attention(model, name)
            names.extend(f"{name}.{s}_proj" for s in ("q", "k", "v") if s in rule.slices)
        else:
            names.append(name)
    return names
