"""Parameter accounting over unique tensors.

A tensor reachable under several names (a shared module such as Mask DINO's box MLP, or a tied
weight) is counted once; two Parameter objects viewing the same storage are also counted once.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["ParamCounts", "count_parameters", "unique_parameters"]


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """total / trainable element counts over unique tensors; trainable_pct = 100 * trainable / total."""

    total: int
    trainable: int
    trainable_pct: float

    def to_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)


def _storage_key(t: torch.Tensor) -> tuple[object, ...]:
    # meta tensors have no storage; their identity is the object itself
    if t.device.type == "meta":
        return ("id", id(t))
    return ("ptr", t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))


def unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(first name, parameter) for each distinct tensor, in registration order."""
    seen: set[tuple[object, ...]] = set()
    out = []
    for name, param in model.named_parameters(remove_duplicate=False):
        key = _storage_key(param)
        if key in seen:
            continue
        seen.add(key)
        out.append((name, param))
    return out


def count_parameters(model: nn.Module) -> ParamCounts:
    total = trainable = 0
    for _, param in unique_parameters(model):
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    pct = 100.0 * trainable / total if total else 0.0
    return ParamCounts(total=total, trainable=trainable, trainable_pct=pct)
