"""Head baselines: full_head, decoder_only, class_mask (trainable-set changes only, no new layers)."""

from models.peft.head.config import ClassMaskConfig, DecoderOnlyConfig, FullHeadConfig, HeadConfig
from models.peft.head.model import baseline_patterns

__all__ = ["HeadConfig", "FullHeadConfig", "DecoderOnlyConfig", "ClassMaskConfig", "baseline_patterns"]
