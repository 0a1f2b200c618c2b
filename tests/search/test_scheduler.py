"""MO-ASHA decisions on a synthetic objective, and what the Optuna glue tells the study (no Ray)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from search.config import parse_config
from search.engine.mo_asha import MOASHAScheduler, epsnet_order, promote, rung_levels
from search.engine.samplers import ConstraintFunction, TruthfulOptunaSearch, make_sampler, optuna_state_for
from search.engine.space import SearchSpace

METRICS = ["ap", "trainable_pct", "latency_ms"]
MODES = ["max", "min", "min"]


def test_rung_levels() -> None:
    assert rung_levels(10, 2, 100) == [10, 20, 40, 80]
    assert rung_levels(10, 3, 90) == [10, 30]
    assert rung_levels(5, 2, 5) == []


def test_promote_rule() -> None:
    # b is dominated by a: with 2 recorded and eta 2, one may continue -> b stops, a continues
    m = np.array([[-0.5, 1.0, 10.0], [-0.4, 1.0, 10.0]])
    assert promote(m, 0, 2) and not promote(m, 1, 2)
    # mutually non-dominated pair: both boundary points (infinite crowding) -> both continue
    m2 = np.array([[-0.5, 2.0, 10.0], [-0.4, 1.0, 10.0]])
    assert promote(m2, 0, 2) and promote(m2, 1, 2)
    # a lone trial always continues
    assert promote(np.array([[0.0, 0.0, 0.0]]), 0, 2)


def _curve(apmax: float, t: int) -> float:
    return apmax * (1 - math.exp(-t / 15))


def test_mo_asha_on_synthetic_objective(tmp_path: Path) -> None:
    """Eight trials: (ap_max, pct, latency). With the "rank" selection trials dominated at a rung
    stop there; the non-dominated ones (including a cheap low-AP one a single-metric ASHA would
    cut) run to the end."""
    trials = {
        "good": (0.60, 1.0, 10.0),
        "cheap": (0.30, 0.1, 10.0),  # low AP but the fewest params: non-dominated
        "fast_big": (0.55, 5.0, 8.0),  # non-dominated through latency
        "bad1": (0.40, 2.0, 12.0),  # dominated by good
        "bad2": (0.35, 3.0, 12.0),
        "bad3": (0.20, 4.0, 13.0),
        "bad4": (0.50, 1.5, 11.0),
        "bad5": (0.25, 1.2, 10.5),
    }
    sched = MOASHAScheduler(
        METRICS, MODES, grace=10, eta=2, max_t=80, state_path=tmp_path / "s.json", selection="rank"
    )
    reached: dict[str, int] = {}
    for name, (apm, pct, lat) in trials.items():  # sequential arrival, as with concurrency 1
        for t in range(10, 81, 10):
            d = sched.decide(
                name, {"iteration": t, "ap": _curve(apm, t), "trainable_pct": pct, "latency_ms": lat}
            )
            reached[name] = t
            if d == TrialScheduler.STOP:
                break
    assert reached["good"] == reached["cheap"] == reached["fast_big"] == 80
    assert all(reached[f"bad{i}"] < 80 for i in range(1, 6)), reached
    assert set(sched.stopped) == {f"bad{i}" for i in range(1, 6)}
    # the rung records persist; a fresh scheduler (a restored sweep) sees them and keeps the decision
    again = MOASHAScheduler(
        METRICS, MODES, grace=10, eta=2, max_t=80, state_path=tmp_path / "s.json", selection="rank"
    )
    assert (
        again.decide("bad1", {"iteration": 40, "ap": 0.9, "trainable_pct": 0.0, "latency_ms": 0.0}) == "STOP"
    )
    assert again.records[0.125].keys() == sched.records[0.125].keys()  # rung 10 of 80 = 1/8 of the schedule
    # final results are never judged; missing metrics continue
    assert again.decide("new", {"iteration": 80, "final": True, "ap": 0.0}) == TrialScheduler.CONTINUE
    assert again.decide("new2", {"iteration": 10}) == TrialScheduler.CONTINUE


def test_optuna_state_for() -> None:
    done = {"final": True, "status": "completed", "ap": 0.5, "trainable_pct": 1.0, "latency_ms": 3.0}
    assert optuna_state_for(done, METRICS, False) == (TrialState.COMPLETE, [0.5, 1.0, 3.0])
    assert optuna_state_for({**done, "final": False}, METRICS, False)[0] == TrialState.PRUNED
    assert optuna_state_for({**done, "status": "infeasible"}, METRICS, False)[0] == TrialState.PRUNED
    assert optuna_state_for({**done, "status": "failed"}, METRICS, False)[0] == TrialState.FAIL
    assert optuna_state_for({**done, "ap": float("nan")}, METRICS, False)[0] == TrialState.FAIL
    assert optuna_state_for(None, METRICS, True)[0] == TrialState.FAIL


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_truthful_search_tells_pruned(sampler: str) -> None:
    cfg = parse_config(
        {"domains": ["clean"], "constraints": [{"metric": "latency_ms", "op": "<=", "value": 20}]}
    )
    cons = [c.model_dump() for c in cfg.constraints]
    s = TruthfulOptunaSearch(
        space=SearchSpace(cfg.space),
        metric=METRICS,
        mode=MODES,
        sampler=make_sampler(sampler, 0, cons),
        constraint_metrics=["latency_ms"],
    )
    cfgs = [s.suggest(f"t{i}") or {} for i in range(4)]
    assert all("method" in c and "lr" in c for c in cfgs)
    study = s._ot_study
    assert study is not None
    base = {"ap": 0.4, "trainable_pct": 1.0, "latency_ms": 10.0}
    s.on_trial_complete("t0", {**base, "final": True, "status": "completed"})
    s.on_trial_complete("t1", {**base, "ap": 0.9, "final": False, "status": "running"})  # early-stopped
    s.on_trial_complete("t2", {**base, "latency_ms": 99.0, "final": True, "status": "infeasible"})
    s.on_trial_complete("t3", None, error=True)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL]
    best = study.best_trials
    assert [t.number for t in best] == [0] and best[0].values == [0.4, 1.0, 10.0]
    # the truncated AP 0.9 of the stopped trial never reached the study
    assert all(t.values is None for t in study.get_trials()[1:])
    assert study.get_trials()[2].user_attrs["latency_ms"] == 99.0
    # the sampler keeps working after pruned/failed tells
    assert "method" in (s.suggest("t4") or {})


def test_constraint_function() -> None:
    cf = ConstraintFunction(
        [{"metric": "latency_ms", "op": "<=", "value": 50}, {"metric": "ap", "op": ">=", "value": 0.2}]
    )
    ft = optuna.trial.create_trial(values=[0.0], user_attrs={"latency_ms": 60.0, "ap": 0.5})
    assert cf(ft) == [10.0, pytest.approx(-0.3)]
    assert cf(optuna.trial.create_trial(values=[0.0])) == [0.0, 0.0]


def test_initial_points_are_tried_first() -> None:
    point = {
        "method": "lora",
        "lora_rank": 8,
        "lora_alpha": 8.0,
        "lora_targets": "msda,dec_self_qv",
        "lr": 1e-3,
        "iterations": 40,
    }
    cfg = parse_config(
        {
            "domains": ["clean"],
            "space": {"lora": {"targets": [["msda", "dec_self_qv"]]}},
            "sampler": {"initial_points": [point]},
        }
    )
    s = TruthfulOptunaSearch(
        space=SearchSpace(cfg.space),
        metric=METRICS,
        mode=MODES,
        sampler=make_sampler("tpe", 0),
        points_to_evaluate=cfg.sampler.initial_points,
    )
    assert s.suggest("a") == point
    assert s.suggest("b") is not None


def _chebyshev_epsnet(z: np.ndarray) -> list[int]:
    """EpsNet written out plainly for a single front (an independent check of the fast version):
    the best first objective first, then repeatedly the row whose nearest ordered row is farthest."""
    lo, hi = z.min(axis=0), z.max(axis=0)
    u = (z - lo) / np.where(hi > lo, hi - lo, 1.0)
    order = [int(np.lexsort(u.T[::-1])[0])]
    while len(order) < len(z):
        rest = [i for i in range(len(z)) if i not in order]
        dist = [min(float(np.max(np.abs(u[i] - u[j]))) for j in order) for i in rest]
        order.append(rest[int(np.argmax(dist))])
    return order


@pytest.mark.parametrize("seed", range(5))
def test_epsnet_order_on_one_front_matches_the_plain_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.random(12)
    front = np.column_stack([x, 1 - x])  # 12 mutually non-dominated points
    assert epsnet_order(front) == _chebyshev_epsnet(front)


def test_epsnet_orders_rank_by_rank_and_spreads_over_the_front() -> None:
    # minimisation: (-ap, pct). Front: a (best AP), b (cheapest), c (middle); d dominated by c.
    m = np.array([[-0.9, 5.0], [-0.1, 0.1], [-0.5, 2.0], [-0.4, 2.5], [-0.85, 4.9]])
    order = epsnet_order(m)
    assert order[0] == 0  # the best AP first
    assert order[1] == 1  # then the farthest from it: the other end of the front
    assert order.index(3) == 4  # the dominated point comes after every non-dominated one
    assert order.index(4) > order.index(2)  # a near-copy of a chosen point waits for the spread
    # with eta 2, 3 of 5 continue: both ends and the middle, not the near-copy of the best
    assert [promote(m, i, 2, "epsnet") for i in range(5)] == [True, True, True, False, False]


def test_front_selection_continues_every_non_dominated_trial() -> None:
    # minimisation (-ap, pct): five mutually non-dominated trials and one dominated (f by c).
    m = np.array([[-0.9, 5.0], [-0.1, 0.1], [-0.5, 2.0], [-0.7, 3.0], [-0.3, 1.0], [-0.4, 2.5]])
    # eta 3 keeps 2 of 6: EpsNet stops three of the front; "front" stops only the dominated one.
    assert sum(promote(m, i, 3, "epsnet") for i in range(6)) == 2
    assert [promote(m, i, 3, "front") for i in range(6)] == [True, True, True, True, True, False]
    # A dominated trial still continues when it is within the budget by EpsNet order (n / eta).
    small = np.array([[-0.9, 5.0], [-0.5, 6.0], [-0.1, 7.0]])  # a dominates b and c
    assert [promote(small, i, 1.5, "front") for i in range(3)] == [True, True, False]


def test_unknown_selection_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="selection: 'best'"):
        MOASHAScheduler(METRICS, MODES, selection="best")
