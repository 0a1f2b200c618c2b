"""Fixtures of the SEEM tests: tiny synthetic instance-segmentation samples
(:data:`model_fixtures.SEEM_STYLE`, 96 px) and one intra-op thread."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:  # --import-mode=importlib does not put tests/ on sys.path
    sys.path.append(_TESTS)

from model_fixtures import SEEM_STYLE, one_thread, synthetic_sample  # noqa: E402

__all__ = ["seem_sample", "one_thread"]


def seem_sample(seed: int, size: int = 96, num_classes: int = 3) -> dict[str, Any]:
    """One image (3, size, size) uint8 with a bright rectangle (class 0) and an ellipse (class
    1 % K) at seed-dependent places, in the detectron2 input-dict format (no gt_boxes)."""
    return synthetic_sample(seed, size, num_classes, style=SEEM_STYLE)


@pytest.fixture
def make_sample() -> Callable[..., dict[str, Any]]:
    return seem_sample
