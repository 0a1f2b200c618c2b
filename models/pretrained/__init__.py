"""The small pretrained base that ships inside the package, so the main job needs no pretraining.

``maskdino_tiny_source/base.pt`` is the Mask DINO ``maskdino_tiny`` model trained on the
synthetic ``source`` domain by ``peftsweep pretrain`` with its default settings and seed 0
(see ``maskdino_tiny_source/pretrain.json``: the config, the training cost, and the mask AP on
held-out source images, which ``tests/models/test_shipped_base.py`` re-evaluates). The folder
has the layout ``peftsweep pretrain --out`` writes (``base.pt`` + ``pretrain.json``), so every
reader of a pretrained base (``select``, the recorders) finds its metadata the same way.

It is a stand-in for an official checkpoint: real work passes one with ``--base``.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import UserError

__all__ = ["SHIPPED_BASE_DIR", "shipped_base"]

SHIPPED_BASE_DIR = Path(__file__).resolve().parent / "maskdino_tiny_source"


def shipped_base() -> Path:
    """Path of the shipped ``base.pt``; UserError when the package was installed without it."""
    ckpt = SHIPPED_BASE_DIR / "base.pt"
    if not ckpt.is_file():
        raise UserError(
            f"{ckpt}: the shipped pretrained base is missing from this installation; "
            "pass --base CKPT or --pretrain"
        )
    return ckpt
