"""Did any pilot learn anything? Choosing among zeros is not a choice.

Seen on real photos (a 3-image VOC set): seven pilot trials all scored AP 0.0 and select exited 0
with a pick. :func:`nothing_learned` says when the best pilot result is no evidence of learning --
its AP at or near 0 (below :data:`NEAR_ZERO_AP`), or no more than the noise above the untrained
model's AP -- and :func:`likely_causes` names what usually causes it. ``peftsweep select`` then
exits with :data:`EXIT_NOTHING_LEARNED` instead of deciding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "EXIT_NOTHING_LEARNED",
    "NEAR_ZERO_AP",
    "DEFAULT_AP_NOISE",
    "MIN_ITERATIONS",
    "MIN_TRAIN_IMAGES",
    "nothing_learned",
    "likely_causes",
]

# Exit status of `peftsweep select` when no pilot learned anything (2: bad input, 3: infeasible).
EXIT_NOTHING_LEARNED = 4
# COCO AP is 0-100: below 1 AP point a model finds next to nothing.
NEAR_ZERO_AP = 1.0
# Seed-to-seed standard deviation of final AP when the pilot ran one seed: the median over the
# recorded real grids (search/benchmarks/tables: 153 configurations x 3 seeds on clean, sd 2.0 AP).
DEFAULT_AP_NOISE = 2.0
# Below these a pilot is short even for the tiny model (the recorded grids: 80 iterations, 32 images).
MIN_ITERATIONS = 40
MIN_TRAIN_IMAGES = 16


def _ap(row: Mapping[str, Any]) -> float:
    try:
        ap = float(row.get("ap", math.nan))
    except (TypeError, ValueError):
        return math.nan
    return ap if row.get("status", "completed") == "completed" else math.nan


def nothing_learned(
    rows: Sequence[Mapping[str, Any]],
    *,
    untrained_ap: float = math.nan,
    noise: float = math.nan,
) -> str | None:
    """Why the pilot learned nothing (one sentence), or None when its best result is real.

    ``rows``: the pilot results (``ap``, ``status``). ``untrained_ap``: the AP of the prepared
    model before training (NaN: unknown, only the near-zero test applies). ``noise``: the AP
    difference that is within noise (NaN: :data:`DEFAULT_AP_NOISE`). No completed row is not this
    case (the decision reports failed trials itself).
    """
    aps = [a for a in (_ap(r) for r in rows) if math.isfinite(a)]
    if not aps:
        return None
    best = max(aps)
    n = noise if math.isfinite(noise) and noise > 0 else DEFAULT_AP_NOISE
    if best < NEAR_ZERO_AP:
        return f"the best pilot AP is {best:.2f} (at or near 0) over {len(aps)} completed trial(s)"
    if math.isfinite(untrained_ap) and best - untrained_ap <= n:
        return (
            f"the best pilot AP {best:.2f} is within noise ({n:.2f} AP) of the untrained model's "
            f"{untrained_ap:.2f}"
        )
    return None


def likely_causes(*, iterations: int, train_images: int | None, untrained_ap: float = math.nan) -> list[str]:
    """What usually makes a pilot learn nothing, most specific first. With an untrained AP well
    above 0 the base already does the task here (seen on the synthetic 'street' domain: AP ~17.5
    before any step, no PEFT method more than noise above it after 80 iterations): then the base
    does transfer, and saying it does not would send the user the wrong way."""
    out: list[str] = []
    base_works = math.isfinite(untrained_ap) and untrained_ap >= NEAR_ZERO_AP
    if base_works:
        out.append(
            f"the base already does well here (AP {untrained_ap:.2f} before any training): adapting it "
            "adds nothing measurable at this pilot length -- keep the base with the new class head, or "
            "run longer pilots to look for a gain"
        )
    if iterations < MIN_ITERATIONS:
        out.append(f"too few iterations ({iterations} per pilot trial; {2 * MIN_ITERATIONS} or more)")
    if train_images is not None and train_images < MIN_TRAIN_IMAGES:
        out.append(f"too few training images ({train_images}; {MIN_TRAIN_IMAGES} or more)")
    if not base_works:
        out.append(
            "a base checkpoint that does not transfer to this domain (check --base, or pretrain nearer it)"
        )
    return out
