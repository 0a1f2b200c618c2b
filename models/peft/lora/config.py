"""LoRA method config (applied with the ``peft`` library), with peft's variants.

``targets`` empty (the default) means "the model family's ``PeftSpec.default_lora_targets``": a
config does not know its model, so the family default is resolved when the config is applied
(:func:`models.peft.library.targets.resolve_targets`).

Variants (peft): ``use_dora`` (weight-decomposed LoRA: a trained magnitude per output row),
``use_rslora`` (scaling ``alpha / sqrt(rank)`` instead of ``alpha / rank``), ``init``:
``default`` (A Kaiming-uniform, B zero), ``gaussian`` (A normal with std 1/rank, B zero),
``pissa`` (A, B from the top-rank SVD of W; W keeps the residual), ``olora`` (A, B from a QR of W;
W keeps the residual). Every combination starts equal to the base model and merges into it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.errors import UserError
from models.peft.config import check_choice, check_range
from models.peft.library.config import MHA_SLICES, RAW_TARGET_PREFIX, LibraryConfig

__all__ = ["LoraConfig", "LORA_INITS", "RAW_TARGET_PREFIX", "MHA_SLICES"]

LORA_INITS = ("default", "gaussian", "pissa", "olora")
_PEFT_INIT: dict[str, bool | str] = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "olora": "olora",
}


@dataclasses.dataclass(frozen=True)
class LoraConfig(LibraryConfig):
    """LoRA ``W + scaling * B A`` on the named targets; everything else frozen except the paper's
    head recipe (``train_heads``), re-initialised modules and ``extra_trainable``."""

    method: ClassVar[str] = "lora"
    peft_type: ClassVar[str] = "LORA"

    rank: int = dataclasses.field(default=8, metadata={"help": "LoRA rank r (1..1024)"})
    alpha: float = dataclasses.field(
        default=8.0, metadata={"help": "LoRA alpha; scaling alpha / rank (alpha / sqrt(rank) if use_rslora)"}
    )
    dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "dropout on the LoRA branch input, in [0, 1)"}
    )
    use_dora: bool = dataclasses.field(
        default=False,
        metadata={"help": "DoRA: adapted weight = trained magnitude per output row x direction"},
    )
    use_rslora: bool = dataclasses.field(
        default=False, metadata={"help": "rank-stabilised scaling alpha / sqrt(rank) (rsLoRA)"}
    )
    init: str = dataclasses.field(
        default="default",
        metadata={
            "help": "factor initialisation: default (A Kaiming, B zero), gaussian, pissa (SVD of W), "
            "olora (QR of W); pissa and olora move the top components out of the frozen W"
        },
    )

    def validate(self) -> None:
        super().validate()
        m = self.method
        check_range(m, "rank", self.rank, 1, 1024, "1..1024")
        if not self.alpha > 0:
            raise UserError(f"{m}.alpha must be > 0, got {self.alpha!r}")
        check_range(m, "dropout", self.dropout, 0.0, None, "in [0, 1)")
        if self.dropout >= 1.0:
            raise UserError(f"{m}.dropout must be in [0, 1), got {self.dropout!r}")
        check_choice(m, "init", self.init, LORA_INITS)

    @property
    def modifies_base(self) -> bool:
        return self.init in ("pissa", "olora")

    def peft_config(self, target_modules: list[str]) -> Any:
        import peft
        from torch import nn

        from models.peft.lora.fused import FusedLoraLinear

        config = peft.LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft annotates int, computes in float
            lora_dropout=self.dropout,
            target_modules=list(target_modules),
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            init_lora_weights=_PEFT_INIT[self.init],  # type: ignore[arg-type]
            bias="none",
        )
        # peft's custom-module dispatch: every nn.Linear target (split q/v projections included)
        # gets peft's LoRA Linear with the hook the fused MSDA kernel reads its factors through
        config._register_custom_module({nn.Linear: FusedLoraLinear})
        return config
