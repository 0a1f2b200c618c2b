"""IA3 method config: every target's output is scaled by a learned vector, ``y = l ⊙ (x W^T + b)``.

Applied with peft's ``IA3Config`` (no feed-forward modules: the scale acts on each target's output,
q and v of an attention included). Per adapted ``nn.Linear`` (in -> out) it trains ``out``
parameters, initialised to ones (the model starts equal to the base); it merges into ``W`` and
``b`` (no deployed cost).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.peft.library.config import LibraryConfig

__all__ = ["Ia3Config"]


@dataclasses.dataclass(frozen=True)
class Ia3Config(LibraryConfig):
    """IA3 on the named targets (the same target sets as LoRA) plus the paper's head recipe."""

    method: ClassVar[str] = "ia3"
    peft_type: ClassVar[str] = "IA3"

    def peft_config(self, target_modules: list[str]) -> Any:
        import peft

        return peft.IA3Config(
            target_modules=list(target_modules), feedforward_modules=[], init_ia3_weights=True
        )
