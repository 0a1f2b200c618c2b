"""LoRA method config.

``targets`` empty (the default) means "the model family's ``PeftSpec.default_lora_targets``": a
config does not know its model, so the family default is resolved when the config is applied
(:func:`models.peft.lora.model.resolve_lora_targets`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from models.errors import UserError
from models.peft.config import MethodConfig, check_choice, check_patterns, check_range
from models.peft.targets import all_lora_target_names

__all__ = ["LoraConfig", "RAW_TARGET_PREFIX", "MHA_SLICES"]

# A target that starts with this prefix is a raw regex over module names instead of a set name.
RAW_TARGET_PREFIX = "re:"
MHA_SLICES = ("q", "k", "v")


@dataclasses.dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """LoRA ``W + (alpha / rank) * B A`` on the named targets; everything else frozen except the
    paper's head recipe (``train_heads``), re-initialised modules and ``extra_trainable``."""

    method: ClassVar[str] = "lora"

    rank: int = dataclasses.field(default=8, metadata={"help": "LoRA rank r (1..1024)"})
    alpha: float = dataclasses.field(default=8.0, metadata={"help": "LoRA alpha; scaling = alpha / rank"})
    dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "dropout on the LoRA branch input, in [0, 1)"}
    )
    targets: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={
            "help": "named target sets of the model family; empty (the default) means the family's "
            "default_lora_targets (Mask DINO: msda, dec_self_qv; SEEM: enc_self_qv, dec_self_qv, "
            "dec_cross_qv), resolved when applied to a model. Or 're:<regex>' over module names "
            "(nn.Linear, or nn.MultiheadAttention adapted on mha_slices)"
        },
    )
    mha_slices: tuple[str, ...] = dataclasses.field(
        default=("q", "v"),
        metadata={"help": "in_proj slices adapted for MultiheadAttention hit by a 're:' target (q, k, v)"},
    )
    train_heads: bool = dataclasses.field(
        default=True,
        metadata={"help": "also train the family's head recipe (Mask DINO: class, mask, box MLP)"},
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
        # an empty tuple is the family default, resolved by models.peft.lora.model.resolve_lora_targets
        allowed = all_lora_target_names()
        for target in self.targets:
            if target.startswith(RAW_TARGET_PREFIX):
                check_patterns(m, "targets", [target[len(RAW_TARGET_PREFIX) :]])
            elif target not in allowed:
                raise UserError(
                    f"{m}.targets: unknown target set {target!r}; allowed: {', '.join(allowed)} "
                    f"or '{RAW_TARGET_PREFIX}<regex>'"
                )
        if not self.mha_slices:
            raise UserError(f"{m}.mha_slices must name at least one of q, k, v")
        for s in self.mha_slices:
            check_choice(m, "mha_slices", s, MHA_SLICES)
        if len(set(self.mha_slices)) != len(self.mha_slices):
            raise UserError(f"{m}.mha_slices has duplicates: {list(self.mha_slices)}")
