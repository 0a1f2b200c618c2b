"""The select grids' recorder: its grid holds the pilot, and what it writes is what bench select reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from search.benchmarks import record_real_grid as rec
from search.benchmarks import select as bench
from search.engine.space import grid_points
from search.selection.warmstart import DEFAULT_PILOT, pilot_matrix


def test_select_grid_holds_the_pilot_and_the_rules() -> None:
    grid = {bench.grid_key(p) for p in grid_points(rec.SELECT_GRID, rec.SELECT_LRS)}
    for lr in rec.SELECT_LRS:
        for p in pilot_matrix(DEFAULT_PILOT, lr=lr, iterations=80):
            assert bench.grid_key(p) in grid, p
        for rule in bench.RULES.values():
            assert bench.grid_key(pilot_matrix(rule, lr=lr, iterations=80)[0]) in grid


def _run(p: dict[str, Any], seed: int, base_ap: float) -> dict[str, Any]:
    curve = [
        {"iteration": it, "ap": base_ap * it / 40 + seed, "ap50": 0.0, "loss": 1.0} for it in (10, 20, 30, 40)
    ]
    return {
        **{k: p.get(k, "") for k in rec.PARAM_COLUMNS},
        "ap": curve[-1]["ap"],
        "ap50": 0.0,
        "trainable_params": 100,
        "total_params": 1000,
        "trainable_pct": 10.0,
        "train_seconds": 1.0,
        "domain": "xray",
        "seed": seed,
        "trial_latency_ms": 99.0,
        "status": "completed",
        "curve": curve,
        "wall_seconds": 2.0,
    }


def test_write_only_tables_round_trip_into_bench_select(tmp_path: Path) -> None:
    out = tmp_path / "select_xray.csv"
    points = [{**p, "iterations": 40} for p in grid_points(rec.SELECT_GRID, rec.SELECT_LRS)]
    lora4, lora8 = points[0], points[1]
    runs = [_run(lora4, s, 10.0) for s in (0, 1, 2)] + [_run(lora8, s, 12.0) for s in (0, 1)]  # r8: 2 seeds
    (tmp_path / "select_xray.csv.partial").write_text("".join(json.dumps(r) + "\n" for r in runs))
    keys = {rec.architecture_key(p) for p in points}
    (tmp_path / "select_xray.csv.latency.json").write_text(
        json.dumps({"latency_ms": {k: 50.0 for k in keys}, "spread_ms": 9.0})
    )
    (tmp_path / "select_xray.csv.untrained.json").write_text(json.dumps({"0": 0.5, "1": 0.4, "2": 0.6}))
    recorded = tmp_path / "old.csv"  # an idle-machine table to borrow latency from
    with open(recorded, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rec.PARAM_COLUMNS, "latency_ms"])
        w.writeheader()
        w.writerow({**{k: lora4.get(k, "") for k in rec.PARAM_COLUMNS}, "latency_ms": 11.3})
    rc = rec.main(
        ["--grid", "select", "--domain", "xray", "--iterations", "40", "--eval-every", "10",
         "--out", str(out), "--write-only", "--latency-from", str(recorded)]
    )  # fmt: skip
    assert rc == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["incomplete"].startswith(f"{len(points) - 1} of {len(points)}")
    assert side["untrained_ap"] == {"0": 0.5, "1": 0.4, "2": 0.6}
    assert side["curves"]["file"] == "select_xray.curves.csv"
    # The sidecar states the select grid's own settings (longer runs, more images than the search grid's).
    assert side["settings"]["num_eval_images"] == rec.SELECT_SETTINGS["num_eval_images"] == 64
    assert side["settings"]["num_train_images"] == 64 and side["settings"]["eval_every"] == 10
    assert side["measured_latency_ms"]["base"] == 50.0 and "taken from old.csv" in side["latency"]
    assert f"--latency-from {recorded}" in side["produced_by"]  # the command that reproduces the table
    grid = bench.load_grid("xray", tmp_path)
    # Only LoRA r4 has all three seeds; its AP is their mean, its curve per seed is kept.
    assert len(grid.rows) == 1 and grid.rows[0]["method"] == "lora"
    assert grid.rows[0]["ap"] == 11.0 and grid.rows[0]["latency_ms"] == 11.3  # borrowed: LoRA deploys as base
    assert grid.curves[(bench.grid_key(lora4), 2)] == {10: 4.5, 20: 7.0, 30: 9.5, 40: 12.0}
    assert grid.iterations == 40 and grid.seeds == [0, 1, 2] and grid.untrained_ap[1] == 0.4


def test_seeds_option_records_a_held_out_set_of_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "select_xray.csv"
    points = [{**p, "iterations": 40} for p in grid_points(rec.SELECT_GRID, rec.SELECT_LRS)]
    lora4, lora8 = points[0], points[1]
    runs = [_run(lora4, s, 10.0) for s in (0, 1, 2)] + [_run(lora8, s, 12.0) for s in (0, 1)]
    (tmp_path / "select_xray.csv.partial").write_text("".join(json.dumps(r) + "\n" for r in runs))
    keys = {rec.architecture_key(p) for p in points}
    (tmp_path / "select_xray.csv.latency.json").write_text(
        json.dumps({"latency_ms": {k: 50.0 for k in keys}, "spread_ms": 9.0})
    )
    args = ["--grid", "select", "--domain", "xray", "--iterations", "40", "--out", str(out), "--write-only"]
    (tmp_path / "select_xray.csv.untrained.json").write_text(json.dumps({"0": 0.5, "1": 0.4}))
    assert rec.main([*args, "--eval-every", "10", "--seeds", "1,0"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    # With seeds 0 and 1 both LoRA points are complete; the command that reproduces it names them.
    assert side["seeds"] == [0, 1] and side["produced_by"].count("--seeds 1,0") == 1
    grid = bench.load_grid("xray", tmp_path)
    assert len(grid.rows) == 2 and grid.seeds == [0, 1]
    with pytest.raises(SystemExit) as exc:
        rec.main([*args, "--seeds", "a,b"])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
