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
