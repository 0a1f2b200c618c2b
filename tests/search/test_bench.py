"""`peftsweep bench search` on the shipped recorded table (fast: no Ray, no training)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from search.bench import (
    BENCH_LRS,
    BENCH_SPACE,
    SURROGATE_TABLE,
    add_arguments,
    load_table,
    main,
    run_bench,
)
from search.data.make_recorded_trials import write_table
from search.pareto import hypervolume, non_dominated_mask, to_min
from search.space import grid_points


def test_table_covers_the_grid_and_is_reproducible(tmp_path: Path) -> None:
    table = load_table(SURROGATE_TABLE)
    assert table.source == "surrogate"  # labelled: not measured
    assert len(table.values) == len(grid_points(BENCH_SPACE, BENCH_LRS)) == 321
    # the space read back from the table is the grid it was written from
    assert set(table.space.methods) == set(BENCH_SPACE.methods)
    assert table.space.lora.rank == BENCH_SPACE.lora.rank and table.space.lr_grid == BENCH_LRS
    write_table(tmp_path / "t.csv", "surrogate", seed=0)
    assert (tmp_path / "t.csv").read_text() == SURROGATE_TABLE.read_text()


def test_curves_are_monotone_fractions_of_the_grid_hv() -> None:
    res = run_bench(SURROGATE_TABLE, ["random", "tpe"], seeds=2, trials=30)
    table = load_table(SURROGATE_TABLE)
    vals = to_min(np.stack(list(table.values.values())), ["max", "min", "min"])
    ref = res["reference_point"]
    ref_min = np.array([-ref["ap"], ref["log10_trainable_pct"], ref["latency_ms"]])
    # reference = nadir of the grid front + 10 % of its range
    front = vals[non_dominated_mask(vals)]
    np.testing.assert_allclose(ref_min, front.max(0) + 0.1 * (front.max(0) - front.min(0)))
    assert res["grid_hypervolume"] == pytest.approx(hypervolume(vals, ref_min))
    for r in res["samplers"].values():
        c = np.array(r["mean_curve"])
        assert len(c) == 30 and np.all(np.diff(c) >= -1e-12) and 0 < c[-1] <= 1 + 1e-9


def test_cli_entry(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = ["--table", str(SURROGATE_TABLE), "--samplers", "random", "--seeds", "1", "--trials", "12"]
    assert main(p.parse_args(args)) == 0
    out = capsys.readouterr().out
    assert "source: surrogate" in out and "random" in out


def test_incomplete_grid_is_rejected(tmp_path: Path) -> None:
    from models.errors import UserError

    lines = SURROGATE_TABLE.read_text().splitlines()
    (tmp_path / "t.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError, match="not a full grid"):
        load_table(tmp_path / "t.csv")


def test_shipped_real_table_is_the_real_grid() -> None:
    from search.bench import REAL_TABLE
    from search.data.record_real_grid import REAL_GRID, REAL_LRS

    if not REAL_TABLE.exists():
        pytest.skip("no real recorded table shipped")
    table = load_table(REAL_TABLE)
    assert table.source == "real"
    assert len(table.values) == len(grid_points(REAL_GRID, REAL_LRS))
    vals = np.stack(list(table.values.values()))
    assert np.isfinite(vals).all() and (vals[:, 0] >= 0).all()  # AP measured, log10(pct), latency
