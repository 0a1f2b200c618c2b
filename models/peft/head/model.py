"""Head baselines: the trainable patterns of a baseline for a model family."""

from __future__ import annotations

from models.peft.head.config import HeadConfig
from models.peft.targets import PeftSpec

__all__ = ["baseline_patterns"]


def baseline_patterns(config: HeadConfig, spec: PeftSpec) -> tuple[str, ...]:
    """Trainable regexes of ``config.method`` for ``spec``'s family (no modules are injected)."""
    try:
        return spec.baselines[config.method]
    except KeyError:
        raise ValueError(f"model family {spec.family!r} defines no baseline {config.method!r}") from None
