"""What the model config dataclasses (Mask DINO, SEEM) share.

:class:`ModelConfigBase` is a field-less mixin for frozen dataclasses (so each family keeps its own
field order). Contract: the subclass has fields ``num_classes``, ``hidden_dim``, ``conv_dim``,
``nheads`` and ``gn_groups``, sets ``config_label`` (the family's name in messages), and calls
:meth:`check_common` from ``__post_init__``. :meth:`replace` is what
:mod:`models.registry` uses for overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

from models.errors import UserError

__all__ = ["ModelConfigBase"]


class ModelConfigBase:
    """``replace(**overrides)`` and the checks every family's config needs."""

    config_label: ClassVar[str] = "model"
    # fields of the subclass (annotations only: a non-dataclass base contributes no fields)
    num_classes: int
    hidden_dim: int
    conv_dim: int
    nheads: int
    gn_groups: int

    def check_common(self) -> None:
        """UserError naming the field: num_classes >= 1, nheads divides hidden_dim and conv_dim,
        gn_groups divides conv_dim."""
        if self.num_classes < 1:
            raise UserError(f"num_classes: must be >= 1, got {self.num_classes}")
        if self.hidden_dim % self.nheads or self.conv_dim % self.nheads:
            raise UserError(f"nheads: {self.nheads} must divide hidden_dim and conv_dim")
        if self.conv_dim % self.gn_groups:
            raise UserError(f"conv_dim: {self.conv_dim} must be divisible by gn_groups={self.gn_groups}")

    def replace(self, **overrides: Any) -> Self:
        """A copy with fields replaced; an unknown field -> UserError naming it."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for key in overrides:
            if key not in names:
                raise UserError(f"{key}: not a {self.config_label} config field")
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]
