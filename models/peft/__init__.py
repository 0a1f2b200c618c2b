"""PEFT methods for instance-segmentation models: peft-library methods (LoRA with DoRA / rsLoRA /
PiSSA / OLoRA, LoHa, IA3), sequential adapters, head baselines.

Public API (team contract):

- ``build_method_config(name, **params) -> MethodConfig`` (UserError naming a bad field)
- ``apply_method(model, config, *, reinitialized=(), spec=None) -> PeftModelInfo``
- ``merge_for_inference(model)`` (peft layers merged and unloaded, split attentions packed: the
  base's structure and official keys; adapters stay), ``merge_lora(model)`` / ``unmerge_lora(model)``
  (every peft layer, reversible)
- ``count_parameters(model) -> ParamCounts(total, trainable, trainable_pct)`` (unique tensors)
- ``save_artifact(model, config, path, base_name)`` / ``load_artifact(model, path)`` (peft's
  ``adapter_config.json`` + ``adapter_model.safetensors`` for peft methods, base fingerprint
  checked), ``peft_model_from_artifact(model, path)`` (peft's own ``PeftModel.from_pretrained``)
- ``METHODS`` (name -> MethodEntry), per-family target tables in :mod:`models.peft.targets`.

Why peft for LoRA, LoHa and IA3: its layers, variants, merging and saved format are what PEFT users
expect and know. Where its built-in layer differs from the paper the project adapts the input:
a packed ``nn.MultiheadAttention`` target is split into q/k/v ``nn.Linear`` blocks
(:mod:`models.peft.split_attention`) so peft adapts q and v only (peft's own MultiheadAttention
LoRA adapts all of in_proj plus out_proj), and peft's custom-module dispatch gives every
``nn.Linear`` target the project's :class:`~models.peft.lora.FusedLoraLinear` (peft's layer plus
the hook the fused MSDA kernel reads the ``sampling_offsets`` factors through). peft has no
sequential bottleneck adapter: :mod:`models.peft.adapter` is the project's own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.peft.accounting import ParamCounts, count_parameters
    from models.peft.artifact import base_fingerprint, load_artifact, peft_model_from_artifact, save_artifact
    from models.peft.config import MethodConfig
    from models.peft.library import peft_layers
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
    "peft_layers",
    "peft_model_from_artifact",
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
    "peft_model_from_artifact": "artifact",
    "peft_layers": "library",
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
