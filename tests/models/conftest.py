"""Shared fixtures of the model tests: tiny synthetic instance-segmentation samples (a rectangle and
an ellipse per image) and one intra-op thread (tiny shapes; avoids OpenMP spin-waits on 2 busy cores)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from detectron2.structures import BitMasks, Instances

__all__ = ["synthetic_sample"]


def synthetic_sample(seed: int, size: int = 128, num_classes: int = 3) -> dict[str, Any]:
    """One image (3, size, size) uint8 with a rectangle (class 0) and an ellipse (class 2 % K)
    at seed-dependent places, in the detectron2 input-dict format."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((3, size, size), 30, dtype=torch.uint8)
    img += torch.randint(0, 20, (3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    x0, y0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
    masks[0, y0 : y0 + size // 3, x0 : x0 + size // 3 + 8] = True
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (int(v) for v in torch.randint(size // 3, size - size // 4, (2,), generator=g))
    masks[1] = ((yy - cy) ** 2 / (size / 8) ** 2 + (xx - cx) ** 2 / (size / 5) ** 2) <= 1
    masks[0] &= ~masks[1]
    img[0][masks[0]] = 220
    img[1][masks[1]] = 200
    inst = Instances((size, size))
    inst.gt_classes = torch.tensor([0, 2 % num_classes])
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    return {"image": img, "height": size, "width": size, "instances": inst}


@pytest.fixture
def make_sample() -> Callable[..., dict[str, Any]]:
    """The :func:`synthetic_sample` factory."""
    return synthetic_sample


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
