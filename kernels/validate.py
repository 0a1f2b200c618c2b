"""Checks of the level metadata before a kernel reads ``value`` through it.

A GPU kernel trusts ``spatial_shapes`` / ``level_start_index``: a level that runs past the value
tensor's length is an out-of-bounds read (garbage, or an illegal-address error that kills the CUDA
context). :func:`check_levels` checks every level before a launch and raises a one-line
``ValueError`` naming the argument.

The contents live on the GPU in Mask DINO, so reading them is a host synchronisation. One forward
passes the same two tensors to every layer (6 encoder + 9 decoder MSDAs), so a checked pair is
remembered by identity and autograd version counter (an in-place change bumps it): one
synchronisation per new pair, not one per call.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["check_levels"]

# spatial_shapes -> (its version, weakref to the level_start_index checked with it, that tensor's
# version, the value length S they were checked against)
_CHECKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _version(t: torch.Tensor) -> int | None:
    """The autograd version counter; None for an inference-mode tensor, which has none (such a pair
    is remembered by identity alone: it is made for one forward and not written between layers)."""
    return None if t.is_inference() else t._version


def _remembered(shapes: torch.Tensor, starts: torch.Tensor, length: int) -> bool:
    seen = _CHECKED.get(shapes)
    if seen is None:
        return False
    version, starts_ref, starts_version, seen_length = seen
    return (
        version == _version(shapes)
        and starts_ref() is starts
        and starts_version == _version(starts)
        and seen_length == length
    )


def check_levels(spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, length: int) -> None:
    """Raise ``ValueError`` unless every level ``l`` lies inside a value tensor of ``length`` tokens.

    ``spatial_shapes`` (L, 2) integer (H, W) with H, W >= 1; ``level_start_index`` (L,) integer with
    ``0 <= start`` and ``start + H * W <= length`` (levels may overlap, as Deformable DETR allows).
    """
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got shape {tuple(spatial_shapes.shape)}")
    if level_start_index.shape != spatial_shapes.shape[:1]:
        raise ValueError(
            f"level_start_index must be (L,) = ({spatial_shapes.shape[0]},), "
            f"got shape {tuple(level_start_index.shape)}"
        )
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
    if _remembered(spatial_shapes, level_start_index, length):
        return
    # one host copy of both (3L integers): a single synchronisation when they live on the GPU
    parts = [spatial_shapes.reshape(-1).long(), level_start_index.reshape(-1).long()]
    if parts[0].device == parts[1].device:
        both = torch.cat(parts).cpu()
    else:  # callers may keep one of them on the host
        both = torch.cat([x.cpu() for x in parts])
    num_levels = spatial_shapes.shape[0]
    hw = both[: 2 * num_levels].view(num_levels, 2).tolist()
    starts = both[2 * num_levels :].tolist()
    for lvl, ((h, w), start) in enumerate(zip(hw, starts)):
        if h < 1 or w < 1:
            raise ValueError(f"spatial_shapes[{lvl}] = ({h}, {w}): height and width must be >= 1")
        if start < 0 or start + h * w > length:
            raise ValueError(
                f"level_start_index[{lvl}] = {start}: level {lvl} ({h}x{w}) must lie inside the value "
                f"tensor's {length} tokens (start >= 0, start + H*W <= {length})"
            )
    _CHECKED[spatial_shapes] = (
        _version(spatial_shapes),
        weakref.ref(level_start_index),
        _version(level_start_index),
        length,
    )
