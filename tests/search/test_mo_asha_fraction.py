"""MO-ASHA on a fair fidelity: rungs at fractions of each trial's own schedule."""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import TrialScheduler

from search.engine.mo_asha import MOASHAScheduler, rung_fractions

METRICS = ["ap", "trainable_pct", "latency_ms"]
MODES = ["max", "min", "min"]


def _res(it: int, ap: float, total: int | None = None) -> dict[str, float]:
    r = {"iteration": it, "ap": ap, "trainable_pct": 1.0, "latency_ms": 10.0}
    if total is not None:
        r["iterations"] = total
    return r


def test_rung_fractions() -> None:
    assert rung_fractions(10, 2, 80) == [0.125, 0.25, 0.5]
    assert rung_fractions(10, 2, 10) == []


def test_trials_of_different_lengths_meet_at_the_same_point_of_their_schedules(tmp_path: Path) -> None:
    """A 20-iteration trial at iteration 10 is half-way down its LR schedule; an 80-iteration trial
    is there at 40. Iteration rungs compare the short trial's half-way AP with the long trial's
    eighth-way AP and stop the long one; fraction rungs compare equal shares of the schedules."""
    long_curve = {10: 0.10, 20: 0.20, 40: 0.40}  # long trial: better at equal schedule share
    short_curve = {5: 0.08, 10: 0.30}

    by_iter = MOASHAScheduler(METRICS, MODES, grace=10, eta=2, max_t=80, fidelity="iterations")
    assert by_iter.decide("short", _res(10, short_curve[10])) == TrialScheduler.CONTINUE
    assert by_iter.decide("long", _res(10, long_curve[10])) == TrialScheduler.STOP  # unfair

    fair = MOASHAScheduler(
        METRICS, MODES, grace=10, eta=2, max_t=80, fidelity="fraction", state_path=tmp_path / "s.json"
    )
    assert fair.rungs == [0.125, 0.25, 0.5]
    # short (20 it): iteration 5 = 0.25 of its schedule, 10 = 0.5 (final rung below 1).
    assert fair.decide("short", _res(5, short_curve[5]), total=20) == TrialScheduler.CONTINUE
    assert fair.decide("short", _res(10, short_curve[10]), total=20) == TrialScheduler.CONTINUE
    assert set(fair.records[0.125]) == {"short"} and set(fair.records[0.5]) == {"short"}
    # long (80 it) reaches 0.125 at 10 and 0.25 at 20: compared with short's 0.25 point there.
    assert fair.decide("long", _res(10, long_curve[10]), total=80) == TrialScheduler.CONTINUE
    assert fair.decide("long", _res(20, long_curve[20]), total=80) == TrialScheduler.CONTINUE
    assert (
        fair.records[0.25]["short"][0] == short_curve[5] and fair.records[0.25]["long"][0] == long_curve[20]
    )
    # at 0.5 (iteration 40 of 80 vs 10 of 20) long is better, short was recorded earlier
    assert fair.decide("long", _res(40, long_curve[40]), total=80) == TrialScheduler.CONTINUE
    # the total may also come with the result (the replay and tests without Tune)
    assert fair.decide("third", _res(10, 0.01, total=80)) == TrialScheduler.STOP
    assert fair.stopped["third"] == 10  # the rung's iteration for this trial

    # state persists with fraction keys and loads back into a fresh scheduler (resume)
    data = json.loads((tmp_path / "s.json").read_text())
    assert set(data["records"]) == {"0.125", "0.25", "0.5"}
    again = MOASHAScheduler(
        METRICS, MODES, grace=10, eta=2, max_t=80, fidelity="fraction", state_path=tmp_path / "s.json"
    )
    assert again.decide("third", _res(20, 0.5, total=80)) == TrialScheduler.STOP
    assert again.decide("long", _res(40, long_curve[40], total=80)) == TrialScheduler.CONTINUE
    assert set(again.records[0.5]) == {"short", "long"}


def test_a_result_without_its_schedule_length_counts_against_max_t() -> None:
    """Callers that do not give a length (trials of one length) get the iteration rungs."""
    fair = MOASHAScheduler(METRICS, MODES, grace=10, eta=2, max_t=80)
    assert fair.fidelity == "fraction"
    assert fair.decide("x", _res(10, 0.0)) == TrialScheduler.CONTINUE
    assert set(fair.records[0.125]) == {"x"} and not fair.records[0.25]
