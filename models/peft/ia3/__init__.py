"""IA3 (learned output scaling) through the ``peft`` library."""

from models.peft.ia3.config import Ia3Config

__all__ = ["Ia3Config"]
