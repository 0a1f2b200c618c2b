"""PEFT methods for instance-segmentation models: LoRA, sequential adapters, head baselines.

Public API (team contract):

- ``build_method_config(name, **params) -> MethodConfig`` (UserError naming a bad field)
- ``apply_method(model, config, *, reinitialized=(), spec=None) -> PeftModelInfo``
- ``merge_for_inference(model)`` (LoRA folded into plain layers; adapters stay),
  ``merge_lora(model)`` / ``unmerge_lora(model)`` (reversible)
- ``count_parameters(model) -> ParamCounts(total, trainable, trainable_pct)`` (unique tensors)
- ``save_artifact(model, config, path, base_name)`` / ``load_artifact(model, path)``
- ``METHODS`` (name -> MethodEntry), per-family target tables in :mod:`models.peft.targets`.

Why our own LoRA layers rather than the ``peft`` library: peft wraps a target as
``<name>.base_layer`` (renaming the base state_dict keys), its MultiheadAttention LoRA adapts the
whole packed in_proj (q, k and v: the paper's listed defect) plus out_proj, and the kernels' fused
MSDA path needs ``kernels.LoRALinear`` on ``sampling_offsets``/``value_proj``. One layer
family for every target keeps base keys unchanged and gives one merge path
(``W <- W + (alpha / rank) * B A``). peft has no sequential bottleneck adapter either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.peft.accounting import ParamCounts, count_parameters
    from models.peft.artifact import base_fingerprint, load_artifact, save_artifact
    from models.peft.config import MethodConfig
    from models.peft.lora import merge_for_inference, merge_lora, unmerge_lora
    from models.peft.registry import (
        METHODS,
        MethodEntry,
        PeftModelInfo,
        apply_method,
        build_method_config,
        config_from_dict,
        register_method,
    )
    from models.peft.targets import PeftSpec, get_peft_spec, register_peft_spec

__all__ = [
    "METHODS",
    "MethodConfig",
    "MethodEntry",
    "ParamCounts",
    "PeftModelInfo",
    "PeftSpec",
    "apply_method",
    "base_fingerprint",
    "build_method_config",
    "config_from_dict",
    "count_parameters",
    "get_peft_spec",
    "load_artifact",
    "merge_for_inference",
    "merge_lora",
    "register_method",
    "register_peft_spec",
    "save_artifact",
    "unmerge_lora",
]

# Names resolve on first use (PEP 562): importing a submodule such as ``models.peft.config`` (which
# ``peftsweep --help`` does through search.cli.params) must not pull torch in through this package.
_WHERE = {
    "ParamCounts": "accounting",
    "count_parameters": "accounting",
    "base_fingerprint": "artifact",
    "load_artifact": "artifact",
    "save_artifact": "artifact",
    "MethodConfig": "config",
    "merge_for_inference": "lora",
    "merge_lora": "lora",
    "unmerge_lora": "lora",
    "METHODS": "registry",
    "MethodEntry": "registry",
    "PeftModelInfo": "registry",
    "apply_method": "registry",
    "build_method_config": "registry",
    "config_from_dict": "registry",
    "register_method": "registry",
    "PeftSpec": "targets",
    "get_peft_spec": "targets",
    "register_peft_spec": "targets",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'models.peft' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.peft.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
