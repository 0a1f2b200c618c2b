"""SEEM (X-Decoder lineage) for closed-set instance segmentation, with the paper's PEFT sites.

:mod:`models.families` imports this package on the first model / PEFT lookup, so callers need
not. Importing it registers the model configs ``seem_focall`` (the paper's Focal-L model in the
official v1 layout, language encoder included), ``seem_focall_table`` (a learned class table instead of
the language encoder), ``seem_focalt`` and ``seem_tiny`` (CPU-sized) with :mod:`models.registry`,
and SEEM's PEFT table with :mod:`models.peft.targets`. The model itself is
:class:`models.seem.meta_arch.SEEM` (imported lazily by the builder, so this import stays light).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.registry import register_model_config
from models.seem import peft_spec as _peft_spec  # noqa: F401  (registers the PEFT spec)
from models.seem.config import SEEM_FOCALL, SEEM_FOCALL_TABLE, SEEM_FOCALT, SEEM_TINY, SEEMConfig

__all__ = ["SEEMConfig", "SEEM_FOCALL", "SEEM_FOCALL_TABLE", "SEEM_FOCALT", "SEEM_TINY", "build_seem"]


def build_seem(cfg: Any) -> nn.Module:
    """Builder used by the registry: ``SEEM(cfg)``."""
    from models.seem.meta_arch import SEEM

    return SEEM(cfg)


register_model_config("seem_focall", "seem", SEEM_FOCALL, build_seem)
register_model_config("seem_focall_table", "seem", SEEM_FOCALL_TABLE, build_seem)
register_model_config("seem_focalt", "seem", SEEM_FOCALT, build_seem)
register_model_config("seem_tiny", "seem", SEEM_TINY, build_seem)
