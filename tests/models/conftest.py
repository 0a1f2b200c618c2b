"""Fixtures of the Mask DINO model tests: tiny synthetic instance-segmentation samples (a rectangle
and an ellipse per image, :data:`model_fixtures.MASKDINO_STYLE`) and one intra-op thread."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parent.parent)
if _TESTS not in sys.path:  # --import-mode=importlib does not put tests/ on sys.path
    sys.path.append(_TESTS)

from model_fixtures import one_thread, synthetic_sample  # noqa: E402

__all__ = ["synthetic_sample", "one_thread"]


@pytest.fixture
def make_sample() -> Callable[..., dict[str, Any]]:
    """The :func:`model_fixtures.synthetic_sample` factory (Mask DINO style)."""
    return synthetic_sample
