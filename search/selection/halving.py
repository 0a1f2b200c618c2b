"""Successive halving among pilot candidates: many configurations for a few iterations, the best
continued.

Every candidate trains with the *full* pilot schedule (``iterations`` = the last rung, so its
learning-rate schedule does not depend on where it stops); at each rung it stops after that many
iterations and is evaluated. The best ``1/eta`` of the rung (at least ``min_keep``; ranked by
``promote_by``: AP, or the training loss just before the rung, see :data:`PROMOTE_BY`) continue from
where they stopped to the next rung; the others keep the AP of their last rung. The best
*reference* candidate (the full head, :func:`is_reference`) always continues while it fits the
budgets: the decision measures every method against the best pilot AP, so a reference cut early by
a noisy rung lowers that bar and lets a weaker cheap method through (``keep_reference``). A candidate
therefore costs the iterations of the furthest rung it reached -- the compute a stopped trial
saves is real, not an estimate. Ties at a rung go to the earlier candidate in the queue, which puts
the neighbours' warm-start points (queued first) ahead of the fixed pilot.

The halving logic is pure (:func:`successive_halving`): it calls ``run_rung`` with the candidates
to train to a rung and the rung's iteration count, and ranks what comes back. The pilot runner
(:mod:`search.selection.pilots`) trains real trials (in this process or on Ray), ``peftsweep bench
select`` replays recorded AP curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.errors import UserError

__all__ = [
    "PROMOTE_BY",
    "DEFAULT_PROMOTE_BY",
    "HalvingSchedule",
    "is_reference",
    "Rung",
    "HalvingResult",
    "RunRung",
    "successive_halving",
    "within_budgets",
]

# (candidate index in the queue, its parameters) -> one result row each (with "ap" and "status"),
# after training that candidate to ``iterations`` (continuing from its previous rung).
RunRung = Callable[[Sequence[tuple[int, Mapping[str, Any]]], int], Sequence[Mapping[str, Any]]]


# How a rung is ranked for promotion. "ap": the rung's evaluation AP. "loss": the mean training
# loss over the steps just before the rung (``rung_loss``, lower is better). "ap+loss": the mean of
# the two ranks. Early in training AP on a small eval split is near zero and noisy, while the
# training loss averages many steps and already orders what each method's capacity can fit.
PROMOTE_BY = ("ap", "loss", "ap+loss")
# What select ranks by unless told otherwise (search/benchmarks/select_cpu.md: why).
DEFAULT_PROMOTE_BY = "loss"


@dataclass(frozen=True)
class HalvingSchedule:
    """Rungs (training iterations, increasing; the last is the full pilot length) and the cut."""

    rungs: tuple[int, ...]
    eta: float = 2.0  # keep the best ceil(n / eta) of a rung
    min_keep: int = 2  # never fewer survivors than this (the decision wants a runner-up)
    promote_by: str = "ap"  # what ranks a rung for promotion: one of PROMOTE_BY
    keep_reference: bool = True  # the best reference candidate within the budgets always continues

    def __post_init__(self) -> None:
        if not self.rungs or any(int(r) != r or r < 1 for r in self.rungs):
            raise UserError(f"--rungs: training lengths must be positive integers, got {list(self.rungs)}")
        if any(b <= a for a, b in zip(self.rungs, self.rungs[1:])):
            raise UserError(f"--rungs: training lengths must increase, got {list(self.rungs)}")
        if not self.eta > 1:
            raise UserError(f"--eta: must be > 1, got {self.eta}")
        if self.min_keep < 1:
            raise UserError(f"min_keep: must be >= 1, got {self.min_keep}")
        if self.promote_by not in PROMOTE_BY:
            raise UserError(f"--promote-by: one of {', '.join(PROMOTE_BY)}, got {self.promote_by!r}")

    @classmethod
    def geometric(
        cls,
        iterations: int,
        rungs: int = 3,
        eta: float = 2.0,
        min_keep: int = 2,
        promote_by: str = "ap",
        keep_reference: bool = True,
    ) -> HalvingSchedule:
        """``rungs`` lengths ending at ``iterations``, each ``eta`` times the one before
        (rounded; duplicates dropped), e.g. 80 iterations, 3 rungs, eta 2 -> (20, 40, 80)."""
        if iterations < 1:
            raise UserError(f"--iterations: must be >= 1, got {iterations}")
        if rungs < 1:
            raise UserError(f"--rungs: must be >= 1, got {rungs}")
        lengths = sorted({max(1, round(iterations / eta**k)) for k in range(rungs)})
        return cls(tuple(lengths), eta, min_keep, promote_by, keep_reference)

    def survivors(self, n: int) -> int:
        return min(n, max(self.min_keep, math.ceil(n / self.eta)))


@dataclass
class Rung:
    """One rung: its length, the candidates trained to it (queue indices) and their rows."""

    iterations: int
    candidates: list[int]
    rows: dict[int, dict[str, Any]]
    promoted: list[int] = field(default_factory=list)


@dataclass
class HalvingResult:
    """All rungs; ``last_rows[i]`` is candidate i's row at the furthest rung it reached."""

    rungs: list[Rung]
    last_rows: dict[int, dict[str, Any]]
    reached: dict[int, int]  # candidate -> iterations trained
    cost_iterations: int  # trial-iterations spent, all candidates together

    @property
    def finalists(self) -> list[int]:
        """Candidates trained to the last rung (their APs are comparable with each other)."""
        return list(self.rungs[-1].candidates) if self.rungs else []


def _score(row: Mapping[str, Any]) -> float:
    try:
        ap = float(row.get("ap", math.nan))
    except (TypeError, ValueError):
        return -math.inf
    return ap if row.get("status", "completed") == "completed" and math.isfinite(ap) else -math.inf


def _loss(row: Mapping[str, Any]) -> float:
    v = _num(row.get("rung_loss"))
    return v if math.isfinite(v) else math.inf


def _ranked(rows: Mapping[int, Mapping[str, Any]], alive: Sequence[int], promote_by: str) -> list[int]:
    """Candidates that completed the rung, best first by ``promote_by`` (ties: queue order). A
    candidate without a training loss ranks after those with one; a rung where none has one
    (runners that do not report it) is ranked by AP."""
    ok = [i for i in alive if _score(rows[i]) > -math.inf]
    by_ap = sorted(ok, key=lambda i: (-_score(rows[i]), i))
    if promote_by == "ap" or not any(math.isfinite(_loss(rows[i])) for i in ok):
        return by_ap
    by_loss = sorted(ok, key=lambda i: (_loss(rows[i]), i))
    if promote_by == "loss":
        return by_loss
    ap_rank = {i: r for r, i in enumerate(by_ap)}
    loss_rank = {i: r for r, i in enumerate(by_loss)}
    return sorted(ok, key=lambda i: (ap_rank[i] + loss_rank[i], ap_rank[i]))


def is_reference(params: Mapping[str, Any]) -> bool:
    """The pilot's reference for what adaptation reaches on a domain: the full head (the
    decision's AP bar is a fraction of the best pilot AP, which the reference usually sets)."""
    return params.get("method") == "full_head"


def within_budgets(row: Mapping[str, Any], budgets: Any) -> bool:
    """Parameters and latency within ``budgets`` (a :class:`search.selection.decision.Budgets`);
    both are measured before training, so this is known at the first rung."""
    if budgets is None:
        return True
    pct, lat = _num(row.get("trainable_pct")), _num(row.get("latency_ms"))
    if budgets.param_budget_pct is not None and not pct <= budgets.param_budget_pct:
        return False
    return budgets.latency_budget_ms is None or lat <= budgets.latency_budget_ms


def successive_halving(
    points: Sequence[Mapping[str, Any]],
    schedule: HalvingSchedule,
    run_rung: RunRung,
    *,
    budgets: Any = None,
) -> HalvingResult:
    """Run the halving (module docstring) over ``points`` (queue order) with ``run_rung``.

    With ``budgets``, promotion spends the next rung on deployable candidates: the best
    ``survivors(n)`` among those within the parameter and latency budgets continue, plus the
    rung's best candidate (by ``schedule.promote_by``) when it is outside them: it stays the
    reference for what adaptation reaches on this domain, which the decision's minimum-AP fraction
    is measured against. With ``schedule.keep_reference`` the best-ranked reference candidate
    (:func:`is_reference`) within the budgets continues too.
    """
    alive = list(range(len(points)))
    reached = {i: 0 for i in alive}
    last: dict[int, dict[str, Any]] = {}
    rungs: list[Rung] = []
    cost = 0
    for k, length in enumerate(schedule.rungs):
        if not alive:
            break
        rows = list(run_rung([(i, points[i]) for i in alive], length))
        if len(rows) != len(alive):
            raise RuntimeError(f"run_rung returned {len(rows)} rows for {len(alive)} candidates")
        rung = Rung(length, list(alive), {})
        for i, row in zip(alive, rows):
            row = dict(row)
            row["rung"] = k
            row["rung_iterations"] = length
            rung.rows[i] = row
            last[i] = row
            done = row.get("iterations_done", row.get("iterations"))
            # A failed (diverged) trial stops where it failed; it is charged what it trained.
            trained = length if row.get("status", "completed") == "completed" else _as_int(done, length)
            cost += max(0, min(trained, length) - reached[i])
            reached[i] = max(reached[i], min(trained, length))
        rungs.append(rung)
        if k == len(schedule.rungs) - 1:
            break
        ranked = _ranked(rung.rows, alive, schedule.promote_by)
        deployable = [i for i in ranked if within_budgets(rung.rows[i], budgets)]
        keep = deployable[: schedule.survivors(len(alive))]
        if ranked and ranked[0] not in keep:
            keep.append(ranked[0])
        refs = [i for i in deployable if is_reference(points[i])] if schedule.keep_reference else []
        if refs and refs[0] not in keep:
            keep.append(refs[0])
        rung.promoted = keep
        alive = sorted(keep)
    return HalvingResult(rungs, last, reached, cost)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _as_int(v: Any, default: int) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return int(f) if math.isfinite(f) else default
