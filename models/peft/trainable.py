"""Select the trainable parameters of an adapted model by name patterns.

A pattern selects a parameter when it full-matches the parameter's name or the name of one of
the modules above it (``sem_seg_head.predictor.class_embed`` selects ``...class_embed.weight``
and ``...class_embed.bias``). Every alias name of a shared tensor is tried
(``named_parameters(remove_duplicate=False)``), so a shared module (Mask DINO's box MLP, reachable
as ``_bbox_embed``, ``bbox_embed.i`` and ``decoder.bbox_embed.i``) is selected by any of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from torch import nn

from models.errors import UserError

__all__ = ["PEFT_PARAM_MARKERS", "PEFT_PARAM_PREFIXES", "is_peft_param", "name_matches", "set_trainable"]

# Parameter-name components that only PEFT modules create: the bottleneck adapter stacks, and
# the adapter tensors of peft's layers (LoRA factors and DoRA magnitudes, LoHa factors, IA3
# scales), whose names start with the method's prefix.
PEFT_PARAM_MARKERS: tuple[str, ...] = ("adapters",)
PEFT_PARAM_PREFIXES: tuple[str, ...] = ("lora_", "hada_", "lokr_", "ia3_")


def is_peft_param(name: str) -> bool:
    """True for parameters (and state_dict keys) added by a PEFT method."""
    return any(
        part in PEFT_PARAM_MARKERS or (part.startswith(PEFT_PARAM_PREFIXES) and part != "lora_dropout")
        for part in name.split(".")
    )


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def name_matches(name: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    return any(p.fullmatch(prefix) for prefix in _prefixes(name) for p in patterns)


def set_trainable(
    model: nn.Module,
    patterns: Iterable[str],
    *,
    train_peft_params: bool,
    exact_names: Iterable[str] = (),
    field: str = "extra_trainable",
    user_patterns: Iterable[str] = (),
) -> set[int]:
    """Freeze everything, then unfreeze PEFT params (if asked), ``patterns`` and ``user_patterns``.

    ``exact_names``: parameter or module names (e.g. a checkpoint loader's re-initialised keys),
    matched literally. A user pattern (``field`` names it in errors) that selects nothing is a
    UserError: a typo must not silently train less. Returns the ids of the trainable tensors.
    """
    compiled = [re.compile(p) for p in patterns]
    exact = list(exact_names)
    literal = [re.compile(re.escape(n)) for n in exact]
    user = [(p, re.compile(p)) for p in user_patterns]
    named = list(model.named_parameters(remove_duplicate=False))
    for _, param in named:
        param.requires_grad_(False)
    used_user: set[str] = set()
    used_literal: set[str] = set()
    trainable: set[int] = set()
    for name, param in named:
        selected = (train_peft_params and is_peft_param(name)) or name_matches(name, compiled)
        for raw, pat in zip(exact, literal, strict=True):
            if name_matches(name, [pat]):
                selected = True
                used_literal.add(raw)
        for raw, pat in user:
            if name_matches(name, [pat]):
                selected = True
                used_user.add(raw)
        if selected:
            param.requires_grad_(True)
            trainable.add(id(param))
    for raw, _ in user:
        if raw not in used_user:
            raise UserError(f"{field}: pattern {raw!r} matches no parameter of the model")
    # A re-initialised buffer (e.g. a loss weight sized by the class count) has nothing to train.
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    missing = [n for n in exact if n not in used_literal and n not in buffers]
    if missing:
        raise ValueError(f"re-initialised names not found in the model: {missing[:5]}")
    return trainable
