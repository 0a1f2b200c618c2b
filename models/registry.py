"""Named model configurations and :func:`build_model`.

A registry entry couples a frozen config dataclass (with a ``replace(**overrides)`` method that
raises ``UserError`` for unknown fields and a ``num_classes`` field) with a builder. Mask DINO
registers ``maskdino_r50``, ``maskdino_swinl`` and ``maskdino_tiny`` here; other families (SEEM)
call :func:`register_model_config` from their own package, which :mod:`models.families` imports
on the first lookup (so ``build_model("seem_tiny", ...)`` needs no prior ``import models.seem``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from models.errors import UserError
from models.families import load_families
from models.maskdino.config import MASKDINO_R50, MASKDINO_SWINL, MASKDINO_TINY

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ModelEntry",
    "MODEL_CONFIGS",
    "register_model_config",
    "get_model_config",
    "build_model",
    "available_models",
]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """name, family (e.g. "maskdino"), default config, builder(config) -> nn.Module."""

    name: str
    family: str
    config: Any
    builder: Callable[[Any], nn.Module]


MODEL_CONFIGS: dict[str, ModelEntry] = {}


def register_model_config(name: str, family: str, config: Any, builder: Callable[[Any], nn.Module]) -> None:
    """Register (or replace) a named configuration."""
    MODEL_CONFIGS[name] = ModelEntry(name, family, config, builder)


def available_models() -> list[str]:
    """All registered names, including those of family packages not imported yet."""
    load_families()
    return sorted(MODEL_CONFIGS)


def get_model_config(name: str, num_classes: int | None = None, **overrides: Any) -> Any:
    """The named config with ``num_classes`` and overrides applied (UserError on bad names/fields)."""
    if name not in MODEL_CONFIGS:
        load_families()
    if name not in MODEL_CONFIGS:
        raise UserError(f"model: unknown model {name!r} (known: {sorted(MODEL_CONFIGS)})")
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return MODEL_CONFIGS[name].config.replace(**overrides)


def build_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """Build a registered model, e.g. ``build_model("maskdino_r50", num_classes=80)``."""
    cfg = get_model_config(name, num_classes, **overrides)
    return MODEL_CONFIGS[name].builder(cfg)


def _build_maskdino(cfg: Any) -> nn.Module:
    from models.maskdino.meta_arch import MaskDINO

    return MaskDINO(cfg)


register_model_config("maskdino_r50", "maskdino", MASKDINO_R50, _build_maskdino)
register_model_config("maskdino_swinl", "maskdino", MASKDINO_SWINL, _build_maskdino)
register_model_config("maskdino_tiny", "maskdino", MASKDINO_TINY, _build_maskdino)
