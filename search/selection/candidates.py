"""The pilot's candidates: the pilot matrix at each pilot learning rate, after the warm-start points.

Successive halving (:mod:`search.selection.halving`) makes candidates cheap at the first rung, so
the pilot can try more of them than it could train in full: the pilot matrix
(:data:`search.selection.warmstart.DEFAULT_PILOT`) at every learning rate of ``--lrs`` (default:
``--lr`` alone). The neighbours'
warm-start points (:func:`search.selection.warmstart.neighbour_points`) come first in the queue
(ties at a rung go to the earlier candidate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.errors import UserError
from search.selection.warmstart import WarmPoint, pilot_matrix, warm_start_queue

__all__ = ["parse_lrs", "candidate_points"]


def parse_lrs(text: str) -> list[float]:
    """``"1e-3,3e-3"`` -> ``[0.001, 0.003]``; UserError naming ``--lrs`` on anything else."""
    out: list[float] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            lr = float(item)
        except ValueError:
            raise UserError(f"--lrs: {item!r} is not a number") from None
        if not (lr > 0 and math.isfinite(lr)):
            raise UserError(f"--lrs: learning rates must be > 0, got {item}")
        out.append(lr)
    if not out:
        raise UserError("--lrs: names no learning rate")
    return out


def candidate_points(
    pilot: str,
    lrs: Sequence[float],
    iterations: int,
    *,
    warm: Sequence[WarmPoint] = (),
) -> list[WarmPoint]:
    """Warm points first, then the pilot matrix at each learning rate (in ``lrs`` order);
    duplicates dropped; every point trains ``iterations`` (the full pilot length)."""
    points: list[dict[str, Any]] = []
    for lr in lrs:
        points.extend(pilot_matrix(pilot, lr=float(lr), iterations=iterations))
    return warm_start_queue(points, list(warm), iterations=iterations)
