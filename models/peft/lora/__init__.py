"""LoRA: config, layers (LoRALinear from kernels, LoRAMultiheadAttention), injection and merging."""

from models.peft.lora.config import LoraConfig
from models.peft.lora.layer import LoRALinear, LoRAMultiheadAttention
from models.peft.lora.model import apply_lora, lora_modules, merge_for_inference, merge_lora, unmerge_lora

__all__ = [
    "LoraConfig",
    "LoRALinear",
    "LoRAMultiheadAttention",
    "apply_lora",
    "lora_modules",
    "merge_for_inference",
    "merge_lora",
    "unmerge_lora",
]
