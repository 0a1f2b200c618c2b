"""The sequential bottleneck adapter (Pfeiffer-style) that sits in a ``models.layers.AdapterSite``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BottleneckAdapter", "make_activation"]


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}")


class BottleneckAdapter(nn.Module):
    """``delta(h) = up(act(down(h)))`` with ``down: Linear(d, d // reduction)``,
    ``up: Linear(d // reduction, d)``.

    Returns the delta only (the site adds it). ``up`` starts with zero weight and bias, so the
    delta is exactly zero at initialisation; ``down`` keeps nn.Linear's default init so gradients
    reach ``up`` from the first step. Parameters: ``2 * d * d/r + d/r + d``.
    """

    def __init__(self, d_model: int, reduction: int = 4, activation: str = "relu") -> None:
        super().__init__()
        if reduction < 1 or d_model % reduction != 0:
            raise ValueError(f"reduction {reduction} must divide d_model {d_model}")
        hidden = d_model // reduction
        self.down = nn.Linear(d_model, hidden)
        self.act = make_activation(activation)
        self.up = nn.Linear(hidden, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))
