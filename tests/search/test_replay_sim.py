"""The simulated engine replay (search.benchmarks.replay_sim) against the Ray replay it stands in for."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import UserError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from test_engine_replay import write_curve_table  # noqa: E402


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_simulated_replay_trains_what_tune_trains_at_concurrency_one(
    ray_session: None, tmp_path: Path, sampler: str
) -> None:
    """Same searcher, same MO-ASHA, one slot: the event order is Tune's, so the same trials are
    trained, stopped at the same rungs, with the same values."""
    from search.benchmarks.engine_replay import load_curve_table, run_replay
    from search.benchmarks.replay_sim import simulate_replay
    from search.config import EarlyStopping

    ct = load_curve_table(write_curve_table(tmp_path / "t.csv"))
    es = EarlyStopping(grace_fraction=0.25, reduction_factor=2)
    sim = simulate_replay(ct, sampler, 3, 12, concurrency=1, stopping=es)
    real = run_replay(ct, sampler, 3, 12, concurrency=1, stopping=es, seconds_per_iteration=0.0)
    assert sim.pruned >= 1  # the table makes MO-ASHA stop something
    assert sim.statuses == real.statuses
    assert sim.iterations_trained == real.iterations_trained
    np.testing.assert_allclose(sim.values, real.values)


def test_stopping_effect_compares_with_the_same_sweeps_without_stopping(tmp_path: Path) -> None:
    from search.benchmarks.engine_replay import load_curve_table
    from search.benchmarks.replay_sim import parse_stopping, stopping_effect

    ct = load_curve_table(write_curve_table(tmp_path / "t.csv"))
    base, (eff,) = stopping_effect(ct, parse_stopping("0.25:2:epsnet"), [0, 1], trials=10)
    assert base.shape == (2,) and np.all((base > 0) & (base <= 1 + 1e-9))
    assert np.all(eff.compute_saved > 1.0)  # every seed stopped something
    assert np.all(eff.hv_kept > 0) and "saved" in eff.line()


def test_a_malformed_stopping_setting_names_the_option() -> None:
    from search.benchmarks.replay_sim import parse_stopping

    with pytest.raises(UserError, match="--stopping: '0.25:3'"):
        parse_stopping("0.25:3")
    with pytest.raises(UserError, match="--stopping: '0.25:3:best'"):
        parse_stopping("0.25:3:best")


def test_oracle_curves_report_the_final_ap_at_every_evaluation(tmp_path: Path) -> None:
    """The perfect early predictor: each evaluation of a configuration reports its final AP, so
    MO-ASHA's rung ranks are the final ranks (and nothing else about the table changes)."""
    from search.benchmarks.engine_replay import load_curve_table
    from search.benchmarks.replay_sim import oracle_curves, simulate_replay
    from search.config import EarlyStopping

    ct = load_curve_table(write_curve_table(tmp_path / "t.csv"))
    oracle = oracle_curves(ct)
    assert oracle.curves.keys() == ct.curves.keys() and oracle.table is ct.table
    for k, curve in ct.curves.items():
        assert [it for it, _ in oracle.curves[k]] == [it for it, _ in curve]
        assert {ap for _, ap in oracle.curves[k]} == {curve[-1][1]}
    es = EarlyStopping(grace_fraction=0.25, reduction_factor=2)
    run = simulate_replay(oracle, "random", 0, 12, concurrency=1, stopping=es)
    assert run.pruned >= 1 and len(run.values) == 12  # MO-ASHA still stops (by final AP now)
