"""``bench search`` with the engine in the loop: recorded curves replayed through Ray Tune + MO-ASHA."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.errors import UserError

HEADER = [
    "method",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "adapter_repetitions",
    "adapter_placement",
    "adapter_residual",
    "adapter_reduction",
    "lr",
    "iterations",
    "ap",
    "trainable_pct",
    "latency_ms",
    "status",
    "source",
    "ap_curve",
]


def write_curve_table(path: Path, *, curves: bool = True) -> Path:
    """A small full grid (LoRA ranks x adapter depths x 2 lrs, 40 iterations) with AP curves
    evaluated every 5 iterations: the low lr learns slowly and ends lower (same costs), so it is
    dominated early, which is what early stopping should find."""
    rows = []
    for lr in (1e-4, 1e-3):
        slow = lr < 5e-4
        for rank in (2, 4, 8, 16):
            rows.append(
                [
                    "lora",
                    rank,
                    8.0,
                    "",
                    "",
                    "",
                    "",
                    "",
                    lr,
                    40,
                    30 + 2 * math.log2(rank) - 8 * slow,
                    0.1 * rank,
                    10.0,
                ]
            )
        for reps in (1, 2, 3):
            rows.append(
                [
                    "adapter",
                    "",
                    "",
                    "",
                    reps,
                    "enc_self,dec_self,dec_cross",
                    "kappa+lambda",
                    4,
                    lr,
                    40,
                    33 + 2 * reps - 8 * slow,
                    0.5 * reps,
                    10.0 + 1.5 * reps,
                ]
            )
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for r in rows:
            final, rate = float(r[10]), (0.05 if float(r[8]) < 5e-4 else 0.15)
            curve = [
                [t, round(final * (1 - math.exp(-rate * t)) / (1 - math.exp(-rate * 40)), 4)]
                for t in range(5, 41, 5)
            ]
            w.writerow([*r, "completed", "synthetic", json.dumps(curve) if curves else ""])
    return path


def test_curve_table_loads_and_bad_curves_are_named(tmp_path: Path) -> None:
    from search.benchmarks.engine_replay import load_curve_table

    ct = load_curve_table(write_curve_table(tmp_path / "t.csv"))
    assert ct.has_curves and len(ct.curves) == len(ct.table.values) == 14
    assert all(c[-1][0] == 40 for c in ct.curves.values())
    assert not load_curve_table(write_curve_table(tmp_path / "n.csv", curves=False)).has_curves
    text = (tmp_path / "t.csv").read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ',"[[5, oops]]"'
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match="row 4: ap_curve"):
        load_curve_table(tmp_path / "bad.csv")


def test_curves_from_the_recorders_side_file(tmp_path: Path) -> None:
    """``<stem>.curves.csv`` (record_real_grid --eval-every): mean AP over seeds per iteration."""
    from search.benchmarks.engine_replay import load_curve_table

    table = write_curve_table(tmp_path / "g.csv", curves=False)
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    params = HEADER[:10]
    with open(tmp_path / "g.curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*params, "domain", "seed", "iteration", "ap", "ap50", "loss", "status"])
        for r in rows:
            for seed, shift in ((0, -1.0), (1, 1.0)):
                for it in (20, 40):
                    w.writerow(
                        [*(r[c] for c in params), "clean", seed, it, it / 2 + shift, "", 1.0, "completed"]
                    )
            w.writerow([*(r[c] for c in params), "clean", 2, 20, "", "", "", "failed"])
    ct = load_curve_table(table)
    assert ct.has_curves and all(c == [(20, 10.0), (40, 20.0)] for c in ct.curves.values())


@pytest.mark.slow
def test_replay_through_tune_with_and_without_early_stopping(ray_session: None, tmp_path: Path) -> None:
    from search.benchmarks.engine_replay import load_curve_table, run_replay

    ct = load_curve_table(write_curve_table(tmp_path / "t.csv"))
    full = run_replay(ct, "random", 0, 14, concurrency=4, early_stopping=False, seconds_per_iteration=0.001)
    es = run_replay(ct, "random", 0, 14, concurrency=4, early_stopping=True, seconds_per_iteration=0.001)
    # Without stopping every trial trains its 40 iterations and completes.
    assert len(full.values) == 14 and full.pruned == 0 and full.iterations_trained == 14 * 40
    assert np.all(np.isfinite(full.values))
    # The same sampler and seed with MO-ASHA: the same number of trials, stopped ones spent less.
    assert len(es.values) == 14 and es.pruned >= 1
    assert es.iterations_trained < full.iterations_trained
    assert np.sum(np.all(np.isfinite(es.values), axis=1)) == 14 - es.pruned
