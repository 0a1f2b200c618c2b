"""Backbones (detectron2 ``Backbone`` objects producing ``res2..res5``) by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectron2.modeling import Backbone

from models.backbones.focal import FocalNet, build_focal_large, build_focal_tiny
from models.backbones.resnet import build_resnet50, build_tiny_resnet
from models.backbones.swin import SwinTransformer, build_swin_large
from models.errors import UserError

__all__ = [
    "build_backbone",
    "BACKBONES",
    "build_resnet50",
    "build_tiny_resnet",
    "build_swin_large",
    "SwinTransformer",
    "FocalNet",
    "build_focal_tiny",
    "build_focal_large",
]

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet50": build_resnet50,
    "swin_large": build_swin_large,
    "tiny_resnet": build_tiny_resnet,
    # FocalNet (SEEM): the paper configs (kwargs override fields), or plain FocalNet kwargs
    "focal_tiny": build_focal_tiny,
    "focal_large": build_focal_large,
    "focal": FocalNet,
}


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build a registered backbone; unknown name -> UserError naming ``backbone``."""
    if name not in BACKBONES:
        raise UserError(f"backbone: unknown backbone {name!r} (known: {sorted(BACKBONES)})")
    return BACKBONES[name](**kwargs)
