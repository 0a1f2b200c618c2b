"""`peftsweep bench search` on the shipped recorded table (fast: no Ray, no training)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from search.benchmarks.make_recorded_trials import BENCH_LRS, BENCH_SPACE, write_table
from search.benchmarks.samplers import (
    SURROGATE_TABLE,
    add_arguments,
    load_table,
    main,
    run_bench,
)
from search.engine.space import grid_points
from search.results.pareto import hypervolume, non_dominated_mask, to_min


def test_table_covers_the_grid_and_is_reproducible(tmp_path: Path) -> None:
    table = load_table(SURROGATE_TABLE)
    assert table.source == "surrogate"  # labelled: not measured
    assert len(table.values) == len(grid_points(BENCH_SPACE, BENCH_LRS)) == 321
    # the space read back from the table is the grid it was written from
    assert set(table.space.methods) == set(BENCH_SPACE.methods)
    assert table.space.lora.rank == BENCH_SPACE.lora.rank and table.space.lr_grid == BENCH_LRS
    write_table(tmp_path / "t.csv", seed=0)
    assert (tmp_path / "t.csv").read_text() == SURROGATE_TABLE.read_text()


def test_curves_are_monotone_fractions_of_the_grid_hv() -> None:
    from search.results.pareto import reference_point

    res = run_bench(SURROGATE_TABLE, ["random", "tpe"], seeds=2, trials=30)
    table = load_table(SURROGATE_TABLE)
    raw = table.completed()
    # sweep view: the reference rule and units of a sweep's fronts.json with default objectives
    ref = list(res["views"]["sweep"]["reference_point"].values())
    assert ref == reference_point(
        ["ap", "trainable_pct", "latency_ms"], ["max", "min", "min"], [0.0, 100.0, None], raw
    )
    assert ref[:2] == [0.0, 100.0]
    assert res["views"]["sweep"]["grid_hv"] == pytest.approx(
        hypervolume(to_min(raw, ["max", "min", "min"]), to_min(np.array([ref]), ["max", "min", "min"])[0])
    )
    # front view: log10(trainable %), reference = nadir of the grid front + 10 % of its range
    logv = raw.copy()
    logv[:, 1] = np.log10(logv[:, 1])
    vals = to_min(logv, ["max", "min", "min"])
    fref = res["views"]["front"]["reference_point"]
    ref_min = np.array([-fref["ap"], fref["trainable_pct"], fref["latency_ms"]])
    front = vals[non_dominated_mask(vals)]
    np.testing.assert_allclose(ref_min, front.max(0) + 0.1 * (front.max(0) - front.min(0)))
    assert res["views"]["front"]["grid_hv"] == pytest.approx(hypervolume(vals, ref_min))
    for r in res["samplers"].values():
        for view in ("sweep", "front"):
            c = np.array(r[view]["mean_curve"])
            assert len(c) == 30 and np.all(np.diff(c) >= -1e-12) and 0 < c[-1] <= 1 + 1e-9
        assert r["meets_target"] == r["sweep"]["meets_target"]


def test_real_grid_rows_aggregate_seeds_and_round_latency() -> None:
    from search.benchmarks.record_real_grid import aggregate, architecture_key

    p = {
        "method": "lora",
        "lora_rank": 8,
        "lora_alpha": 8.0,
        "lora_targets": "msda",
        "lr": 1e-3,
        "iterations": 40,
    }
    base = {"trainable_params": 10, "total_params": 100, "trainable_pct": 10.0, "train_seconds": 2.0}
    runs = [
        {**p, **base, "ap": a, "ap50": 2 * a, "status": "completed", "trial_latency_ms": t}
        for a, t in [(10.0, 12.0), (12.0, 11.0), (14.0, 30.0)]
    ]
    row = aggregate(runs, latency_ms=11.2649)
    assert row["ap"] == pytest.approx(12.0) and row["ap_sd"] == pytest.approx(2.0) and row["ap50"] == 24.0
    assert row["latency_ms"] == pytest.approx(11.3) and row["trial_latency_ms"] == 12.0
    assert row["status"] == "completed" and row["source"] == "real" and row["seeds"] == 3
    failed = aggregate([*runs[:2], {**runs[2], "status": "failed", "ap": float("nan")}], 11.26)
    assert failed["status"] == "failed" and np.isnan(failed["ap"])
    # latency depends on the deployed structure only: never on lr, LoRA rank/alpha
    assert architecture_key(p) == architecture_key({**p, "lora_rank": 2, "lora_alpha": 4.0, "lr": 3e-3})
    assert architecture_key(p) == architecture_key({"method": "class_mask"}) == "base"  # merged LoRA
    assert architecture_key({"method": "full_head"}) == "base"
    ad = {
        "method": "adapter",
        "adapter_repetitions": 2,
        "adapter_placement": "dec_self",
        "adapter_residual": "kappa",
        "adapter_reduction": 4,
    }
    assert architecture_key(ad) != architecture_key({**ad, "adapter_repetitions": 3})


def test_cli_entry(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = ["--table", str(SURROGATE_TABLE), "--samplers", "random", "--seeds", "1", "--trials", "12"]
    assert main(p.parse_args(args)) == 0
    out = capsys.readouterr().out
    assert "source: surrogate" in out and "random" in out


def test_cli_progress_lines_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """Progress on stderr (plain lines off a terminal: one per sampler run at the end at least),
    the figures alone on stdout; --quiet prints no progress at all."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = ["--table", str(SURROGATE_TABLE), "--samplers", "random,tpe", "--seeds", "2", "--trials", "6"]
    assert main(p.parse_args(args)) == 0
    cap = capsys.readouterr()
    assert "bench search" in cap.err and "4/4" in cap.err, cap.err
    assert "bench search" not in cap.out and "source: surrogate" in cap.out
    assert main(p.parse_args([*args, "--quiet"])) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and "source: surrogate" in cap.out


def test_incomplete_grid_is_rejected(tmp_path: Path) -> None:
    from models.errors import UserError

    lines = SURROGATE_TABLE.read_text().splitlines()
    (tmp_path / "t.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserError, match="not a full grid"):
        load_table(tmp_path / "t.csv")


def test_shipped_real_table_is_the_real_grid() -> None:
    from search.benchmarks.record_real_grid import REAL_GRID, REAL_LRS
    from search.benchmarks.samplers import REAL_TABLE

    if not REAL_TABLE.exists():
        pytest.skip("no real recorded table shipped")
    table = load_table(REAL_TABLE)
    assert table.source == "real"
    assert len(table.values) == len(grid_points(REAL_GRID, REAL_LRS))
    vals = np.stack(list(table.values.values()))
    assert np.isfinite(vals).all() and (vals[:, 0] >= 0).all() and (vals[:, 1] > 0).all()
    # Intermediate AP of every point (what bench search --engine replays to MO-ASHA), to its end.
    from search.benchmarks.engine_replay import load_curve_table

    ct = load_curve_table(REAL_TABLE)
    assert ct.has_curves and len(ct.curves) == len(table.values)
    for curve in ct.curves.values():
        steps = [it for it, _ in curve]
        assert steps == sorted(steps) and steps[0] > 0 and steps[-1] == max(REAL_GRID.iterations)


def test_sampler_settings_compare_on_tuning_seeds() -> None:
    """The settings comparison (search.benchmarks.sampler_settings) replays asks ahead of tells:
    fractions of the grid's HV in (0, 1]; the constant liar changes what concurrent asks get."""
    from search.benchmarks.sampler_settings import compare

    res = compare(["tpe", "tpe-no-liar", "random"], [100, 101], table_path=SURROGATE_TABLE, trials=16)
    assert set(res) == {"tpe", "tpe-no-liar", "random"}
    assert all(0 < f <= 1 + 1e-9 for fr in res.values() for f in fr)
    assert res["tpe"] != res["tpe-no-liar"]
