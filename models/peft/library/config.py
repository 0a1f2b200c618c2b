"""Fields shared by the methods applied through the ``peft`` library, and their peft config.

A method config (LoRA, LoHa, IA3) names *target sets* of the model family
(:attr:`models.peft.targets.PeftSpec.lora_targets`; the same sets for every method, so methods are
compared on the same modules) or ``re:<regex>`` over module names. :meth:`LibraryConfig.peft_config`
builds the peft config for the resolved module names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from models.errors import UserError
from models.peft.config import MethodConfig, check_choice, check_patterns
from models.peft.targets import all_lora_target_names

__all__ = ["LibraryConfig", "RAW_TARGET_PREFIX", "MHA_SLICES"]

# A target that starts with this prefix is a raw regex over module names instead of a set name.
RAW_TARGET_PREFIX = "re:"
MHA_SLICES = ("q", "k", "v")


@dataclasses.dataclass(frozen=True)
class LibraryConfig(MethodConfig):
    """Target modules and the trainable head recipe of a method applied with peft."""

    # peft's name for the method (PeftType), for messages and the saved adapter
    peft_type: ClassVar[str] = ""

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
        # an empty tuple is the family default, resolved by models.peft.library.targets
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

    def peft_config(self, target_modules: list[str]) -> Any:
        """The peft config (``peft.PeftConfig``) of this method on exactly ``target_modules``."""
        raise NotImplementedError

    @property
    def modifies_base(self) -> bool:
        """True when the initialisation rewrites the targets' base weights (PiSSA, OLoRA)."""
        return False
