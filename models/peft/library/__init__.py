"""The PEFT methods the ``peft`` library provides (LoRA and its variants, LoHa, IA3), applied with
peft to the project's target sets.

- :mod:`.config`: :class:`LibraryConfig`, the fields every such method shares (target sets,
  MultiheadAttention slices, head recipe) and the translation to a peft config.
- :mod:`.targets`: target sets -> module names; a MultiheadAttention target is split
  (:mod:`models.peft.split_attention`) so peft adapts exactly its q / v projections.
- :mod:`.inject`: ``inject_adapter_in_model``, peft's layers in a model, merge / unmerge / unload.
"""

from models.peft.library.config import LibraryConfig
from models.peft.library.inject import (
    inject_library_method,
    merge_for_inference,
    merge_peft_layers,
    peft_layers,
    unmerge_peft_layers,
)
from models.peft.library.targets import resolve_targets

__all__ = [
    "LibraryConfig",
    "inject_library_method",
    "merge_for_inference",
    "merge_peft_layers",
    "peft_layers",
    "resolve_targets",
    "unmerge_peft_layers",
]
