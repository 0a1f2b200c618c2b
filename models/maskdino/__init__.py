"""Mask DINO (instance segmentation), faithful to the official module tree and key names.

Import the model from :mod:`models.maskdino.meta_arch`; configs live in :mod:`models.maskdino.config`.
"""

from models.maskdino.config import MASKDINO_R50, MASKDINO_SWINL, MASKDINO_TINY, MaskDINOConfig

__all__ = ["MaskDINOConfig", "MASKDINO_R50", "MASKDINO_SWINL", "MASKDINO_TINY"]
