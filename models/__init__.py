"""peftsweep: models.

``build_model`` / ``MODEL_CONFIGS`` / ``register_model_config`` are re-exported lazily from
:mod:`models.registry` so that ``import models.errors`` (CLI start-up) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model", "MODEL_CONFIGS", "register_model_config", "get_model_config", "available_models"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
