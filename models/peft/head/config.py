"""Configs of the head baselines: no new layers, a different trainable set."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from models.peft.config import MethodConfig

__all__ = ["HeadConfig", "FullHeadConfig", "DecoderOnlyConfig", "ClassMaskConfig"]


@dataclasses.dataclass(frozen=True)
class HeadConfig(MethodConfig):
    """A baseline: train the patterns the model family lists under ``baselines[method]``."""


@dataclasses.dataclass(frozen=True)
class FullHeadConfig(HeadConfig):
    """Full segmentation-head tuning: everything except the backbone."""

    method: ClassVar[str] = "full_head"


@dataclasses.dataclass(frozen=True)
class DecoderOnlyConfig(HeadConfig):
    """Decoder-only tuning (Mask DINO: ``sem_seg_head.predictor``)."""

    method: ClassVar[str] = "decoder_only"


@dataclasses.dataclass(frozen=True)
class ClassMaskConfig(HeadConfig):
    """Class + mask embedding only."""

    method: ClassVar[str] = "class_mask"
