"""LoHa (low-rank Hadamard product, LyCORIS) through the ``peft`` library."""

from models.peft.loha.config import LohaConfig

__all__ = ["LohaConfig"]
