"""Where PEFT attaches, per model family: a table of named LoRA target sets, adapter sites and
trainable-parameter recipes.

A model family declares one :class:`PeftSpec`. :func:`get_peft_spec` finds the spec of a model:
(1) ``model.peft_spec()`` if the model class defines it, (2) ``model.peft_family`` (a registered
family name), (3) the model's class name as registered with :func:`register_peft_spec`,
(4) structural detection (module names) for the families registered here. SEEM plugs in by
registering its own spec from its package, which :mod:`models.families` imports before any
lookup here (plain ``nn.MultiheadAttention`` everywhere: LoRA sets of kind ``mha``
with slices ``("q", "v")``, sites named after its own layers); nothing else changes.

All patterns are Python regular expressions matched with ``re.fullmatch`` against
``named_modules()`` names (LoRA targets, sites) or parameter/module names (trainable recipes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

from torch import nn

from models.families import load_families

__all__ = [
    "LoraTargetRule",
    "PeftSpec",
    "MASKDINO_SPEC",
    "PEFT_SPECS",
    "register_peft_spec",
    "get_peft_spec",
    "all_lora_target_names",
    "all_placement_names",
]

TargetKind = Literal["linear", "mha"]


@dataclasses.dataclass(frozen=True)
class LoraTargetRule:
    """Modules whose name full-matches ``pattern`` get LoRA.

    kind ``linear``: an ``nn.Linear`` (wrapped as ``kernels.LoRALinear``).
    kind ``mha``: an ``nn.MultiheadAttention`` with packed in_proj; only the named ``slices``
    (rows [0:E] = q, [E:2E] = k, [2E:3E] = v of ``in_proj_weight``) are adapted.
    """

    pattern: str
    kind: TargetKind = "linear"
    slices: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PeftSpec:
    """Everything the PEFT methods need to know about one model family.

    lora_targets: named target sets (a LoRA config lists names from here).
    default_lora_targets: the paper's recipe.
    sites: adapter placement name -> regex of the ``AdapterSite`` module names.
    head_trainable: trained on top of every PEFT method (the paper's recipe).
    baselines: baseline method name -> trainable patterns.
    """

    family: str
    lora_targets: Mapping[str, tuple[LoraTargetRule, ...]]
    default_lora_targets: tuple[str, ...]
    sites: Mapping[str, str]
    head_trainable: tuple[str, ...]
    baselines: Mapping[str, tuple[str, ...]]
    structural_marker: str = ""  # a module name whose presence identifies the family


_ENC = r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.\d+"
_DEC = r"sem_seg_head\.predictor\.decoder\.layers\.\d+"
_MSDA = rf"(?:{_ENC}\.self_attn|{_DEC}\.cross_attn)"
_PRED = r"sem_seg_head\.predictor"

MASKDINO_SPEC = PeftSpec(
    family="maskdino",
    lora_targets={
        # the paper's recipe: MSDA offsets + value projection in all 15 MSDA modules ...
        "msda": (LoraTargetRule(rf"{_MSDA}\.(?:sampling_offsets|value_proj)"),),
        "msda_attention_weights": (LoraTargetRule(rf"{_MSDA}\.attention_weights"),),
        "msda_output_proj": (LoraTargetRule(rf"{_MSDA}\.output_proj"),),
        # ... and q, v (not k) of every decoder self-attention
        "dec_self_qv": (LoraTargetRule(rf"{_DEC}\.self_attn", kind="mha", slices=("q", "v")),),
        "enc_ffn": (LoraTargetRule(rf"{_ENC}\.linear[12]"),),
        "dec_ffn": (LoraTargetRule(rf"{_DEC}\.linear[12]"),),
    },
    default_lora_targets=("msda", "dec_self_qv"),
    sites={
        "enc_self": rf"{_ENC}\.self_attn_site",
        "dec_self": rf"{_DEC}\.self_attn_site",
        "dec_cross": rf"{_DEC}\.cross_attn_site",
    },
    # the shared box MLP appears under several names (_bbox_embed, bbox_embed.i,
    # decoder.bbox_embed.i); every alias is matched, so one pattern is enough.
    head_trainable=(rf"{_PRED}\.class_embed", rf"{_PRED}\.mask_embed", rf"{_PRED}\._bbox_embed"),
    baselines={
        "full_head": (r"(?!backbone(?:\.|$)).+",),
        "decoder_only": (_PRED,),
        "class_mask": (rf"{_PRED}\.class_embed", rf"{_PRED}\.mask_embed"),
    },
    structural_marker="sem_seg_head.predictor.decoder",
)

PEFT_SPECS: dict[str, PeftSpec] = {"maskdino": MASKDINO_SPEC}
_CLASS_TO_FAMILY: dict[str, str] = {"MaskDINO": "maskdino"}


def register_peft_spec(spec: PeftSpec, class_names: tuple[str, ...] = ()) -> None:
    """Register (or replace) a family's spec and the model class names that use it."""
    for pattern in spec.sites.values():
        re.compile(pattern)
    PEFT_SPECS[spec.family] = spec
    for name in class_names:
        _CLASS_TO_FAMILY[name] = spec.family


def get_peft_spec(model: nn.Module) -> PeftSpec:
    """The spec of ``model`` (see the module docstring for the lookup order)."""
    own = getattr(model, "peft_spec", None)
    if callable(own):
        spec = own()
        if not isinstance(spec, PeftSpec):
            raise TypeError(f"{type(model).__name__}.peft_spec() must return a PeftSpec")
        return spec
    load_families()
    family = getattr(model, "peft_family", None) or _CLASS_TO_FAMILY.get(type(model).__name__)
    if isinstance(family, str) and family in PEFT_SPECS:
        return PEFT_SPECS[family]
    names = {name for name, _ in model.named_modules()}
    for spec in PEFT_SPECS.values():
        if spec.structural_marker and spec.structural_marker in names:
            return spec
    raise ValueError(
        f"no PEFT spec for model class {type(model).__name__}: define peft_spec() or peft_family, "
        "or call models.peft.targets.register_peft_spec"
    )


def all_lora_target_names() -> list[str]:
    """Target-set names of every family (config validation before a model exists)."""
    load_families()
    return sorted({name for spec in PEFT_SPECS.values() for name in spec.lora_targets})


def all_placement_names() -> list[str]:
    """Adapter placement names of every family."""
    load_families()
    return sorted({name for spec in PEFT_SPECS.values() for name in spec.sites})
