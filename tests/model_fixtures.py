"""Synthetic instance-segmentation samples and the one-thread fixture shared by the model tests
(tests/models, tests/seem). Import it from a conftest after putting ``tests/`` on ``sys.path``
(``--import-mode=importlib`` does not)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from detectron2.structures import BitMasks, Instances

__all__ = ["SampleStyle", "MASKDINO_STYLE", "SEEM_STYLE", "synthetic_sample", "one_thread"]


@dataclasses.dataclass(frozen=True)
class SampleStyle:
    """How :func:`synthetic_sample` draws: background noise range [lo, hi), rectangle extra width,
    ellipse radius divisors (y, x), (channel, value) painted into each shape, the ellipse's class
    (``ellipse_class % num_classes``), and whether gt_boxes are set."""

    background: tuple[int, int]
    rect_extra_width: int
    ellipse_div: tuple[float, float]
    paint: tuple[tuple[int, int], tuple[int, int]]
    ellipse_class: int
    with_boxes: bool


MASKDINO_STYLE = SampleStyle((30, 50), 8, (8, 5), ((0, 220), (1, 200)), 2, True)
SEEM_STYLE = SampleStyle((20, 50), 6, (7, 5), ((0, 230), (2, 210)), 1, False)


def synthetic_sample(
    seed: int, size: int = 128, num_classes: int = 3, style: SampleStyle = MASKDINO_STYLE
) -> dict[str, Any]:
    """One image (3, size, size) uint8 with a rectangle (class 0) and an ellipse at seed-dependent
    places, in the detectron2 input-dict format."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(*style.background, (3, size, size), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    x0, y0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
    masks[0, y0 : y0 + size // 3, x0 : x0 + size // 3 + style.rect_extra_width] = True
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (int(v) for v in torch.randint(size // 3, size - size // 4, (2,), generator=g))
    dy, dx = style.ellipse_div
    masks[1] = ((yy - cy) ** 2 / (size / dy) ** 2 + (xx - cx) ** 2 / (size / dx) ** 2) <= 1
    masks[0] &= ~masks[1]
    for mask, (channel, value) in zip(masks, style.paint):
        img[channel][mask] = value
    inst = Instances((size, size))
    inst.gt_classes = torch.tensor([0, style.ellipse_class % num_classes])
    inst.gt_masks = BitMasks(masks)
    if style.with_boxes:
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    return {"image": img, "height": size, "width": size, "instances": inst}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny shapes: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
