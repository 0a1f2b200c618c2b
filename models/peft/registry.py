"""Registry of PEFT methods by name and the one entry point that applies any of them.

Every method has the same faces: a config dataclass (``models/peft/<method>/config.py``), an
``inject(model, config, spec) -> names`` function that adds its modules (none for the head
baselines) and a ``patterns(config, spec)`` function that names what it trains beyond its own
new parameters. :func:`apply_method` runs them in that order and then sets ``requires_grad``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from models.errors import UserError
from models.layers import AdapterSite
from models.peft.accounting import ParamCounts, count_parameters, unique_parameters
from models.peft.adapter import AdapterConfig, apply_adapters
from models.peft.config import MethodConfig, make_config
from models.peft.head import ClassMaskConfig, DecoderOnlyConfig, FullHeadConfig, HeadConfig, baseline_patterns
from models.peft.ia3 import Ia3Config
from models.peft.library import LibraryConfig, inject_library_method, peft_layers
from models.peft.loha import LohaConfig
from models.peft.lora import LoraConfig
from models.peft.split_attention import SplitAttention
from models.peft.targets import PeftSpec, get_peft_spec
from models.peft.trainable import set_trainable

__all__ = [
    "MethodEntry",
    "METHODS",
    "register_method",
    "build_method_config",
    "config_from_dict",
    "apply_method",
    "PeftModelInfo",
    "PEFT_INFO_ATTR",
]

# apply_method records its PeftModelInfo on the model under this attribute (read by artifacts).
PEFT_INFO_ATTR = "_peft_info"


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    inject: Callable[[nn.Module, Any, PeftSpec], list[str]]
    patterns: Callable[[Any, PeftSpec], tuple[str, ...]]
    trains_own_params: bool
    help: str


def _no_inject(model: nn.Module, config: Any, spec: PeftSpec) -> list[str]:
    return []


def _peft_patterns(config: LibraryConfig | AdapterConfig, spec: PeftSpec) -> tuple[str, ...]:
    return spec.head_trainable if config.train_heads else ()


def _head_patterns(config: HeadConfig, spec: PeftSpec) -> tuple[str, ...]:
    return baseline_patterns(config, spec)


METHODS: dict[str, MethodEntry] = {}


def register_method(entry: MethodEntry) -> None:
    METHODS[entry.name] = entry


# LoRA (DoRA, rsLoRA, PiSSA / OLoRA inits), LoHa and IA3 are applied with the peft library.
register_method(
    MethodEntry("lora", LoraConfig, inject_library_method, _peft_patterns, True, "low-rank updates (peft)")
)
register_method(
    MethodEntry("loha", LohaConfig, inject_library_method, _peft_patterns, True, "low-rank Hadamard (peft)")
)
register_method(
    MethodEntry("ia3", Ia3Config, inject_library_method, _peft_patterns, True, "learned output scales (peft)")
)
register_method(
    MethodEntry("adapter", AdapterConfig, apply_adapters, _peft_patterns, True, "bottleneck adapters")
)
register_method(
    MethodEntry("full_head", FullHeadConfig, _no_inject, _head_patterns, False, "all but backbone")
)
register_method(
    MethodEntry("decoder_only", DecoderOnlyConfig, _no_inject, _head_patterns, False, "decoder only")
)
register_method(
    MethodEntry("class_mask", ClassMaskConfig, _no_inject, _head_patterns, False, "class+mask embed")
)


def _entry(name: str) -> MethodEntry:
    if name not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return METHODS[name]


def build_method_config(name: str, **params: Any) -> MethodConfig:
    """The validated config of method ``name``; unknown names/fields or bad values -> UserError."""
    return make_config(_entry(name).config_cls, params)


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of ``MethodConfig.to_dict()``."""
    params = dict(data)
    name = params.pop("method", None)
    if not isinstance(name, str):
        raise UserError("method config: missing 'method'")
    return build_method_config(name, **params)


@dataclasses.dataclass(frozen=True)
class PeftModelInfo:
    """What :func:`apply_method` did. ``trainable_names``: first name of each trainable tensor."""

    method: str
    config: MethodConfig
    injected: tuple[str, ...]
    trainable_names: tuple[str, ...]
    reinitialized: tuple[str, ...]
    counts: ParamCounts

    @property
    def trainable(self) -> int:
        return self.counts.trainable

    @property
    def total(self) -> int:
        return self.counts.total

    @property
    def trainable_pct(self) -> float:
        return self.counts.trainable_pct


def _check_unadapted(model: nn.Module) -> None:
    if hasattr(model, PEFT_INFO_ATTR) or peft_layers(model):
        raise ValueError("model already has a PEFT method applied; build a fresh base model")
    for name, module in model.named_modules():
        if isinstance(module, SplitAttention):
            raise ValueError(f"{name} was split for an adapter; build a fresh base model")
        if isinstance(module, AdapterSite) and len(module.adapters):
            raise ValueError(f"{name} already holds adapters; build a fresh base model")


def apply_method(
    model: nn.Module,
    config: MethodConfig,
    *,
    reinitialized: Iterable[str] = (),
    spec: PeftSpec | None = None,
) -> PeftModelInfo:
    """Apply ``config`` to ``model`` in place: inject modules, then set the trainable set.

    Trainable afterwards: the method's own new parameters (LoRA factors, adapters), the method's
    patterns (paper recipe for PEFT methods; the baseline's set for head methods), every name in
    ``reinitialized`` (parameter or module names, e.g. ``LoadReport`` keys re-initialised for a new
    class count) and ``config.extra_trainable``. Everything else, LayerNorms included, is frozen.
    """
    entry = _entry(config.method)
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"config for {config.method!r} must be {entry.config_cls.__name__}")
    config.validate()
    spec = spec or get_peft_spec(model)
    _check_unadapted(model)
    reinit = tuple(reinitialized)
    injected = entry.inject(model, config, spec)
    set_trainable(
        model,
        entry.patterns(config, spec),
        train_peft_params=entry.trains_own_params,
        exact_names=reinit,
        user_patterns=config.extra_trainable,
        field=f"{config.method}.extra_trainable",
    )
    trainable_names = tuple(n for n, p in unique_parameters(model) if p.requires_grad)
    info = PeftModelInfo(
        method=config.method,
        config=config,
        injected=tuple(injected),
        trainable_names=trainable_names,
        reinitialized=reinit,
        counts=count_parameters(model),
    )
    object.__setattr__(model, PEFT_INFO_ATTR, info)
    return info
