"""LoHa method config: ``W + (alpha / rank) * (W1a W1b) ⊙ (W2a W2b)`` on the target modules.

Applied with peft's ``LoHaConfig``. Per adapted ``nn.Linear`` (in -> out) it trains
``2 * rank * (in + out)`` parameters; ``W2b`` starts at zero, so the model starts equal to the base,
and the update merges into ``W`` (no deployed cost).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.errors import UserError
from models.peft.config import check_range
from models.peft.library.config import LibraryConfig

__all__ = ["LohaConfig"]


@dataclasses.dataclass(frozen=True)
class LohaConfig(LibraryConfig):
    """LoHa on the named targets (the same target sets as LoRA) plus the paper's head recipe."""

    method: ClassVar[str] = "loha"
    peft_type: ClassVar[str] = "LOHA"

    rank: int = dataclasses.field(default=8, metadata={"help": "LoHa rank r of each factor pair (1..1024)"})
    alpha: float = dataclasses.field(default=8.0, metadata={"help": "LoHa alpha; scaling = alpha / rank"})
    module_dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "chance of skipping the whole update in a training step, in [0, 1)"}
    )

    def validate(self) -> None:
        super().validate()
        m = self.method
        check_range(m, "rank", self.rank, 1, 1024, "1..1024")
        if not self.alpha > 0:
            raise UserError(f"{m}.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.module_dropout < 1.0:
            raise UserError(f"{m}.module_dropout must be in [0, 1), got {self.module_dropout!r}")

    def peft_config(self, target_modules: list[str]) -> Any:
        import peft

        return peft.LoHaConfig(
            r=self.rank,
            alpha=self.alpha,  # type: ignore[arg-type]  # peft annotates int, computes in float
            module_dropout=self.module_dropout,
            target_modules=list(target_modules),
            init_weights=True,
        )
