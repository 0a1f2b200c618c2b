"""Multi-scale deformable attention (MSDA), PyTorch reference path.

Semantics are those of Deformable DETR: for every query, head, level and point, the value map of
that level is sampled bilinearly at a location in [0, 1] (x, y), with zero padding outside the map
and ``align_corners=False``; the samples are summed with the attention weights.

This path is the numerical reference for the Triton kernels and the path used on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_torch", "sampling_locations_torch"]


def ms_deform_attn_torch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference MSDA.

    Args:
        value: (N, S, M, D) values of all levels, flattened level after level.
        spatial_shapes: (L, 2) long, (H, W) of each level.
        level_start_index: (L,) long, offset of each level in S (unused beyond checking: levels
            are contiguous, so the split follows from ``spatial_shapes``).
        sampling_locations: (N, Lq, M, L, P, 2) in [0, 1] as (x, y); outside reads zeros.
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M * D), in the dtype of ``value``.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1] coordinates
    samples = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_levels[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        samples.append(
            F.grid_sample(v, g.to(v.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights.to(value.dtype)).sum(-1)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


def sampling_locations_torch(
    reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor, n_points: int
) -> torch.Tensor:
    """Deformable-DETR sampling locations from offsets (N, Lq, M, L, P, 2) in pixels of each level.

    2-d reference points (N, Lq, L, 2): ``ref + offset / (W, H)``; 4-d reference boxes
    (N, Lq, L, 4) = (cx, cy, w, h): ``ref_xy + offset / P * ref_wh * 0.5``.
    """
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    if reference_points.shape[-1] == 4:
        return (
            reference_points[:, :, None, :, None, :2]
            + offsets / n_points * reference_points[:, :, None, :, None, 2:] * 0.5
        )
    raise ValueError(f"reference_points last dim must be 2 or 4, got {reference_points.shape[-1]}")
