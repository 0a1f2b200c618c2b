"""The grid_sample reference against a by-hand bilinear loop, and its gradients by gradcheck (fp64)."""

from __future__ import annotations

import math

import torch

from kernels import ms_deform_attn_torch, sampling_locations_torch


def _naive(value, shapes, lsi, locs, weights) -> torch.Tensor:
    """Deformable-DETR MSDA written out point by point (align_corners=False, zero padding)."""
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locs.shape
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for lv in range(levels):
                    height, width = (int(v) for v in shapes[lv])
                    start = int(lsi[lv])
                    for p in range(points):
                        x = float(locs[b, q, h, lv, p, 0]) * width - 0.5
                        y = float(locs[b, q, h, lv, p, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yi, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xi, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= xi < width and 0 <= yi < height:
                                    v = value[b, start + yi * width + xi, h].double()
                                    out[b, q, h] += float(weights[b, q, h, lv, p]) * wy * wx * v
    return out.view(n, lq, m * d)


def test_reference_matches_by_hand_bilinear(make_case) -> None:
    case = make_case(n=2, lq=4, m=2, d=3, shapes=[(3, 5), (2, 1), (1, 1)], p=2, margin=2, seed=4)
    expected = _naive(*case.values())
    torch.testing.assert_close(ms_deform_attn_torch(**case).double(), expected, rtol=1e-5, atol=1e-6)


def test_reference_gradcheck_fp64(make_case) -> None:
    case = make_case(n=1, lq=3, m=2, d=2, shapes=[(3, 2), (2, 3)], p=2, dtype=torch.float64, seed=6)
    names = ("value", "sampling_locations", "attention_weights")
    inputs = [case[k].requires_grad_(True) if k in names else case[k] for k in case]
    assert torch.autograd.gradcheck(ms_deform_attn_torch, inputs, eps=1e-6, atol=1e-5)


def test_sampling_locations_points_and_boxes() -> None:
    shapes = torch.tensor([[4, 8], [2, 2]])
    offsets = torch.randn(1, 2, 3, 2, 5, 2)
    ref = torch.rand(1, 2, 2, 2)
    locs = sampling_locations_torch(ref, offsets, shapes, 5)
    # level 0 is 4 high and 8 wide: x offsets are divided by 8, y offsets by 4
    torch.testing.assert_close(
        locs[0, 1, 2, 0, 3], ref[0, 1, 0] + offsets[0, 1, 2, 0, 3] / torch.tensor([8.0, 4.0])
    )
    boxes = torch.rand(1, 2, 2, 4)
    locs = sampling_locations_torch(boxes, offsets, shapes, 5)
    expected = boxes[0, 0, 1, :2] + offsets[0, 0, 1, 1, 4] / 5 * boxes[0, 0, 1, 2:] * 0.5
    torch.testing.assert_close(locs[0, 0, 1, 1, 4], expected)
