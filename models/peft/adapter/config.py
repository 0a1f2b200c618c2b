"""Sequential bottleneck adapter config."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from models.errors import UserError
from models.peft.config import MethodConfig, check_choice, check_range
from models.peft.targets import all_placement_names

__all__ = ["AdapterConfig", "RESIDUALS", "ACTIVATIONS"]

RESIDUALS = ("kappa", "lambda", "kappa+lambda")
ACTIVATIONS = ("relu", "gelu", "silu")


@dataclasses.dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Bottleneck adapters ``Linear(d, d/reduction) -> act -> Linear(d/reduction, d)`` (zero-init
    up-projection) at every adapter site of the chosen placements, ``repetitions`` per site."""

    method: ClassVar[str] = "adapter"

    repetitions: int = dataclasses.field(default=1, metadata={"help": "adapters stacked per site, 1..4"})
    placement: tuple[str, ...] = dataclasses.field(
        default=("enc_self", "dec_self", "dec_cross"),
        metadata={
            "help": "sites to adapt, any non-empty subset of the family's placements "
            "(Mask DINO: enc_self, dec_self, dec_cross)"
        },
    )
    residual: str = dataclasses.field(
        default="kappa+lambda",
        metadata={
            "help": "adapter input: kappa (attention input), lambda (attention output) or kappa+lambda"
        },
    )
    reduction: int = dataclasses.field(
        default=4, metadata={"help": "bottleneck width = d / reduction (must divide the hidden size d)"}
    )
    activation: str = dataclasses.field(default="relu", metadata={"help": "relu, gelu or silu"})
    train_heads: bool = dataclasses.field(
        default=True,
        metadata={"help": "also train the family's head recipe (Mask DINO: class, mask, box MLP)"},
    )

    def validate(self) -> None:
        super().validate()
        m = self.method
        check_range(m, "repetitions", self.repetitions, 1, 4, "1..4")
        check_range(m, "reduction", self.reduction, 1, None, ">= 1")
        check_choice(m, "residual", self.residual, RESIDUALS)
        check_choice(m, "activation", self.activation, ACTIVATIONS)
        if not self.placement:
            raise UserError(f"{m}.placement must name at least one site")
        allowed = all_placement_names()
        for p in self.placement:
            check_choice(m, "placement", p, allowed)
        if len(set(self.placement)) != len(self.placement):
            raise UserError(f"{m}.placement has duplicates: {list(self.placement)}")
