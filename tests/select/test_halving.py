"""Successive halving among pilot candidates: who continues, what it costs, budget-aware promotion."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from models.errors import UserError
from search.selection.decision import Budgets
from search.selection.halving import HalvingSchedule, successive_halving


def _curves() -> dict[str, dict[int, float]]:
    # AP after 20 / 40 / 80 iterations of each candidate's full-schedule run.
    return {
        "a": {20: 5.0, 40: 9.0, 80: 12.0},
        "b": {20: 8.0, 40: 10.0, 80: 11.0},  # fast starter
        "c": {20: 1.0, 40: 2.0, 80: 30.0},  # late bloomer: halving drops it (the known price)
        "d": {20: 7.0, 40: 13.0, 80: 20.0},
        "e": {20: 8.0, 40: 8.5, 80: 9.0},  # ties b at 20; b is earlier in the queue
    }


def _points(names: Sequence[str], pct: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    return [{"name": n, "trainable_pct": (pct or {}).get(n, 1.0), "latency_ms": 10.0} for n in names]


class Recorder:
    """A run_rung that replays the curves and records every call (candidates, rung length)."""

    def __init__(self, curves: Mapping[str, Mapping[int, float]]) -> None:
        self.curves = curves
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, cands: Sequence[tuple[int, Mapping[str, Any]]], length: int) -> list[dict[str, Any]]:
        self.calls.append(([str(p["name"]) for _, p in cands], length))
        return [{"status": "completed", "ap": self.curves[str(p["name"])][length], **p} for _, p in cands]


def test_geometric_rungs() -> None:
    assert HalvingSchedule.geometric(80, 3, 2.0).rungs == (20, 40, 80)
    assert HalvingSchedule.geometric(40, 3, 2.0).rungs == (10, 20, 40)
    assert HalvingSchedule.geometric(80, 1).rungs == (80,)
    assert HalvingSchedule.geometric(2, 4).rungs == (1, 2)  # duplicates from rounding dropped


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rungs": (40, 20)}, "--rungs"),
        ({"rungs": (0, 10)}, "--rungs"),
        ({"rungs": (10,), "eta": 1.0}, "--eta"),
    ],
)
def test_bad_schedule_names_the_option(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(UserError, match=field):
        HalvingSchedule(**kwargs)


def test_halving_keeps_the_best_and_charges_what_was_trained() -> None:
    names = ["a", "b", "c", "d", "e"]
    run = Recorder(_curves())
    res = successive_halving(_points(names), HalvingSchedule((20, 40, 80), eta=2.0, min_keep=2), run)
    # 5 at 20 -> ceil(5/2) = 3 best (b, e tie at 8.0: b is earlier) -> d, b at 80.
    assert run.calls == [(names, 20), (["b", "d", "e"], 40), (["b", "d"], 80)]
    assert [names[i] for i in res.finalists] == ["b", "d"]
    # Each candidate costs the furthest rung it reached: 20 + 80 + 20 + 80 + 40.
    assert res.reached == {0: 20, 1: 80, 2: 20, 3: 80, 4: 40}
    assert res.cost_iterations == 240
    assert res.last_rows[2]["ap"] == 1.0 and res.last_rows[2]["rung_iterations"] == 20
    assert res.last_rows[3]["ap"] == 20.0 and res.last_rows[3]["rung"] == 2


def test_one_rung_is_the_flat_pilot() -> None:
    run = Recorder(_curves())
    res = successive_halving(_points(["a", "b", "c"]), HalvingSchedule((80,)), run)
    assert run.calls == [(["a", "b", "c"], 80)]
    assert res.cost_iterations == 240 and res.finalists == [0, 1, 2]


def test_failed_candidates_are_charged_what_they_trained_and_not_promoted() -> None:
    def run(cands: Sequence[tuple[int, Mapping[str, Any]]], length: int) -> list[dict[str, Any]]:
        out = []
        for i, _ in cands:
            if i == 0:  # diverged after 7 iterations
                out.append({"status": "failed", "ap": math.nan, "iterations": 7})
            else:
                out.append({"status": "completed", "ap": float(i)})
        return out

    res = successive_halving([{}, {}, {}, {}], HalvingSchedule((10, 20), eta=2.0, min_keep=2), run)
    assert res.finalists == [2, 3]
    assert res.reached[0] == 7
    assert res.cost_iterations == 7 + 10 + 20 + 20


def test_budget_aware_promotion_keeps_deployable_candidates_and_the_reference() -> None:
    # d is the best but too big for the budget; b, e, a are the deployable ones by AP.
    pct = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 50.0, "e": 1.0}
    curves = {**_curves(), "d": {20: 9.0, 40: 13.0, 80: 20.0}}
    run = Recorder(curves)
    budgets = Budgets(param_budget_pct=5.0)
    successive_halving(
        _points(["a", "b", "c", "d", "e"], pct), HalvingSchedule((20, 40, 80), 2.0, 2), run, budgets=budgets
    )
    # Rung 1: the 3 best deployable (b, e, a) continue, plus d as the reference for the best AP.
    assert run.calls[1] == (["a", "b", "d", "e"], 40)
    # Rung 2: the 2 best deployable, b (10.0) and a (9.0); d (13.0) stays as the reference.
    assert run.calls[2] == (["a", "b", "d"], 80)
    without = Recorder(curves)
    successive_halving(
        _points(["a", "b", "c", "d", "e"], pct), HalvingSchedule((20, 40, 80), 2.0, 2), without
    )
    assert without.calls[2] == (["b", "d"], 80)  # budget-blind: only one deployable finalist


def _with_loss(
    curves: Mapping[str, Mapping[int, float]], loss: Mapping[str, Mapping[int, float]]
) -> Recorder:
    """A Recorder whose rows also carry the training loss before each rung."""

    class WithLoss(Recorder):
        def __call__(
            self, cands: Sequence[tuple[int, Mapping[str, Any]]], length: int
        ) -> list[dict[str, Any]]:
            rows = super().__call__(cands, length)
            return [{**r, "rung_loss": loss[str(r["name"])][length]} for r in rows]

    return WithLoss(curves)


# Training loss before each rung: c, the late bloomer, already fits best at 20 iterations.
LOSS = {
    "a": {20: 3.0, 40: 2.6, 80: 2.2},
    "b": {20: 3.2, 40: 2.9, 80: 2.7},
    "c": {20: 2.0, 40: 1.5, 80: 1.0},
    "d": {20: 2.5, 40: 2.0, 80: 1.6},
    "e": {20: 3.2, 40: 3.1, 80: 3.0},  # ties b at 20; b is earlier in the queue
}


def test_promotion_by_training_loss_keeps_the_late_bloomer() -> None:
    names = ["a", "b", "c", "d", "e"]
    run = _with_loss(_curves(), LOSS)
    sched = HalvingSchedule((20, 40, 80), eta=2.0, min_keep=2, promote_by="loss")
    res = successive_halving(_points(names), sched, run)
    # Rung 20 by loss: c 2.0, d 2.5, a 3.0 continue; rung 40: c 1.5, d 2.0. By AP c was dropped.
    assert run.calls == [(names, 20), (["a", "c", "d"], 40), (["c", "d"], 80)]
    assert [names[i] for i in res.finalists] == ["c", "d"]
    assert res.rungs[0].promoted == [2, 3, 0]


def test_promotion_by_mean_rank_of_ap_and_loss() -> None:
    names = ["a", "b", "c", "d", "e"]
    run = _with_loss(_curves(), LOSS)
    successive_halving(_points(names), HalvingSchedule((20, 40, 80), 2.0, 2, promote_by="ap+loss"), run)
    # Rung 20, AP ranks b0 e1 d2 a3 c4, loss ranks c0 d1 a2 b3 e4: sums d3 b3 c4 a5 e5;
    # b and d tie at 3 (b first: the better AP rank), then c.
    assert run.calls[1] == (["b", "c", "d"], 40)


def test_loss_promotion_without_losses_falls_back_to_ap() -> None:
    names = ["a", "b", "c", "d", "e"]
    by_ap, by_loss = Recorder(_curves()), Recorder(_curves())
    successive_halving(_points(names), HalvingSchedule((20, 40, 80), 2.0, 2), by_ap)
    successive_halving(_points(names), HalvingSchedule((20, 40, 80), 2.0, 2, promote_by="loss"), by_loss)
    assert by_loss.calls == by_ap.calls


def test_unknown_promotion_names_the_option() -> None:
    with pytest.raises(UserError, match="--promote-by"):
        HalvingSchedule((10, 20), promote_by="speed")


def _with_full_head(
    names: Sequence[str], head: str, pct: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Points as :func:`_points`, candidate ``head`` being the full-head reference."""
    return [{**p, "method": "full_head" if p["name"] == head else "lora"} for p in _points(names, pct)]


@pytest.mark.parametrize(
    "keep, budget, calls",
    [
        # c (the late bloomer, last by AP at 20 and 40) is the full head: it continues to the end.
        (True, None, [(["a", "b", "c", "d", "e"], 20), (["b", "c", "d", "e"], 40), (["b", "c", "d"], 80)]),
        # ... and is cut like any candidate when the schedule does not keep the reference,
        (False, None, [(["a", "b", "c", "d", "e"], 20), (["b", "d", "e"], 40), (["b", "d"], 80)]),
        # ... or when it is outside the parameter budget (not deployable, and not the rung's best).
        (True, 5.0, [(["a", "b", "c", "d", "e"], 20), (["b", "d", "e"], 40), (["b", "d"], 80)]),
    ],
)
def test_the_full_head_reference_continues_while_it_fits_the_budgets(
    keep: bool, budget: float | None, calls: list[tuple[list[str], int]]
) -> None:
    names = ["a", "b", "c", "d", "e"]
    run = Recorder(_curves())
    sched = HalvingSchedule((20, 40, 80), eta=2.0, min_keep=2, keep_reference=keep)
    points = _with_full_head(names, "c", pct={"c": 57.0})
    res = successive_halving(points, sched, run, budgets=Budgets(param_budget_pct=budget))
    assert run.calls == calls
    # Kept, the reference is a finalist and its final AP (30) is what the decision measures against.
    assert ("c" in [names[i] for i in res.finalists]) is (keep and budget is None)
