"""``peftsweep bench search``: how fast each sampler finds the front, on recorded trial results.

The recorded table (``search/data/recorded_trials.csv``, one row per point of the exhaustive grid
:data:`BENCH_SPACE` x :data:`BENCH_LRS`; its ``source`` column says whether rows are measured or
the labelled synthetic surrogate, see ``search/data/make_recorded_trials.py``) replaces training:
a trial looks its configuration up. Each sampler (the same :func:`search.optuna_glue.make_sampler`
and define-by-run :class:`search.space.SearchSpace` a sweep uses, without Ray) runs ``--trials``
trials for each of ``--seeds`` seeds; after every trial the hypervolume of the completed trials is
computed with the reference point of the whole grid, and reported as a fraction of the grid's
hypervolume. Objectives: AP (max), log10(trainable %) (min), latency ms (min).
Target: >= 95 % of the grid's hypervolume within a third of the grid's trials.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.config import METHODS, PARAM_NAMES, SearchSpaceConfig

__all__ = [
    "RecordedTable",
    "default_tables",
    "BENCH_SPACE",
    "BENCH_LRS",
    "OBJECTIVES",
    "load_table",
    "grid_reference",
    "run_bench",
    "add_arguments",
    "main",
]

BENCH_SPACE = SearchSpaceConfig.model_validate(
    {
        "methods": ["lora", "adapter", "full_head", "decoder_only", "class_mask"],
        "lora": {
            "rank": [2, 4, 8, 16],
            "alpha": [1.0, 4.0, 8.0, 16.0],
            "targets": [["msda"], ["msda", "dec_self_qv"]],
        },
        "adapter": {
            "repetitions": [1, 2, 3, 4],
            "placement": [["enc_self", "dec_self", "dec_cross"], ["dec_self", "dec_cross"]],
            "residual": ["kappa", "lambda", "kappa+lambda"],
            "reduction": [4, 8, 16],
        },
        "iterations": [100],
    }
)
BENCH_LRS = [3e-4, 1e-3, 3e-3]
# (column, mode); trainable_pct enters the hypervolume as log10 (see load_table).
OBJECTIVES: list[tuple[str, str]] = [("ap", "max"), ("trainable_pct", "min"), ("latency_ms", "min")]
# REAL results (search/data/record_real_grid.py) when shipped, else the labelled synthetic surrogate.
REAL_TABLE = Path(__file__).with_name("data") / "recorded_trials.csv"
SURROGATE_TABLE = Path(__file__).with_name("data") / "surrogate_trials.csv"
DEFAULT_TABLE = REAL_TABLE if REAL_TABLE.exists() else SURROGATE_TABLE
_KEY_COLS = list(PARAM_NAMES)  # the identity of a configuration in a recorded table

_NUMERIC = {"lora_rank", "lora_alpha", "adapter_repetitions", "adapter_reduction", "lr", "iterations"}


def _key(p: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for c in _KEY_COLS:
        v = p.get(c)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif c in _NUMERIC:
            out.append(f"{float(v):.6g}")
        else:
            out.append(str(v))
    return tuple(out)


@dataclass
class RecordedTable:
    """A recorded grid: objective values per configuration (trainable % as log10), its search space."""

    values: dict[tuple[str, ...], np.ndarray]  # NaN row = the trial failed
    space: SearchSpaceConfig  # lr_grid set: every dimension is categorical
    source: str


def _space_of(rows: list[dict[str, str]], path: Path) -> SearchSpaceConfig:
    """The categorical space whose grid is exactly the table's configurations (UserError otherwise)."""
    from models.errors import UserError
    from search.space import grid_points, split_list

    def uniq(method: str, col: str, conv: Any) -> list[Any]:
        return sorted({conv(r[col]) for r in rows if r["method"] == method})

    methods = sorted({r["method"] for r in rows}, key=lambda m: METHODS.index(m) if m in METHODS else 99)
    spec: dict[str, Any] = {
        "methods": methods,
        "iterations": sorted({int(float(r["iterations"])) for r in rows}),
    }
    if "lora" in methods:
        spec["lora"] = {
            "rank": uniq("lora", "lora_rank", lambda v: int(float(v))),
            "alpha": uniq("lora", "lora_alpha", float),
            "targets": [split_list(t) for t in uniq("lora", "lora_targets", str)],
        }
    if "adapter" in methods:
        spec["adapter"] = {
            "repetitions": uniq("adapter", "adapter_repetitions", lambda v: int(float(v))),
            "placement": [split_list(t) for t in uniq("adapter", "adapter_placement", str)],
            "residual": uniq("adapter", "adapter_residual", str),
            "reduction": uniq("adapter", "adapter_reduction", lambda v: int(float(v))),
        }
    spec["lr_grid"] = sorted({float(r["lr"]) for r in rows})
    space = SearchSpaceConfig.model_validate(spec)
    grid = {_key(p) for p in grid_points(space, space.lr_grid or [])}
    have = {_key(r) for r in rows}
    if grid != have:
        raise UserError(
            f"{path}: not a full grid ({len(grid - have)} configurations missing, {len(have - grid)} extra)"
        )
    return space


def load_table(path: str | Path = DEFAULT_TABLE) -> RecordedTable:
    """Read a recorded table (CSV: flat search parameters, ap, trainable_pct, latency_ms, source)."""
    import csv

    from models.errors import UserError

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: recorded trial table not found")
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [
        c for c in ["method", "lr", "iterations", *(n for n, _ in OBJECTIVES)] if rows and c not in rows[0]
    ]
    if not rows or missing:
        raise UserError(f"{p}: empty or missing column {missing[0] if missing else '(rows)'!r}")
    table: dict[tuple[str, ...], np.ndarray] = {}
    for row in rows:
        vals = [float(row[n]) if row[n] not in ("", "nan", "NaN") else math.nan for n, _ in OBJECTIVES]
        if row.get("status", "completed") != "completed":
            vals = [math.nan] * len(vals)
        # Trainable share spans orders of magnitude (0.1 % .. 55 %): compare it on a log scale,
        # otherwise the single cheapest point owns most of the hypervolume.
        vals[1] = math.log10(vals[1]) if vals[1] > 0 else math.nan
        table[_key(row)] = np.array(vals)
    sources = ",".join(sorted({row.get("source", "?") for row in rows}))
    return RecordedTable(table, _space_of(rows, p), sources)


def grid_reference(values: np.ndarray) -> list[float]:
    """Reference point of a bench (original units): the nadir of the grid's Pareto front moved out by
    10 % of the front's range per objective (so the HV measures the front region, not the trivially
    dominated space a loose reference like AP=0 would add to every sampler alike)."""
    from search.pareto import non_dominated_mask, to_min

    modes = [m for _, m in OBJECTIVES]
    vmin = to_min(values, modes)
    front = vmin[non_dominated_mask(vmin)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    ref_min = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
    return [float(-r) if m == "max" else float(r) for r, m in zip(ref_min, modes)]


def _run_one(
    sampler_name: str, seed: int, n_trials: int, table: RecordedTable, ref_min: np.ndarray
) -> list[float]:
    import optuna

    from search.optuna_glue import make_sampler
    from search.pareto import hypervolume, to_min
    from search.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    modes = [m for _, m in OBJECTIVES]
    space = SearchSpace(table.space)
    sampler = make_sampler(sampler_name, seed, population_size=16, startup_trials=10)
    study = optuna.create_study(
        directions=["maximize" if m == "max" else "minimize" for m in modes], sampler=sampler
    )
    pts: list[np.ndarray] = []
    hist: list[float] = []
    for _ in range(n_trials):
        trial = study.ask()
        space(trial)
        vals = table.values[_key(trial.params)]
        if np.all(np.isfinite(vals)):
            study.tell(trial, vals.tolist())
            pts.append(to_min(vals[None, :], modes)[0])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        hist.append(hypervolume(np.array(pts), ref_min) if pts else 0.0)
    return hist


def run_bench(
    table_path: str | Path = DEFAULT_TABLE,
    samplers: list[str] | None = None,
    seeds: int = 5,
    trials: int | None = None,
) -> dict[str, Any]:
    """Curves of HV fraction vs trials per sampler (mean/min over seeds) and the target check."""
    from search.pareto import hypervolume, to_min

    table = load_table(table_path)
    source = table.source
    values = np.stack(list(table.values.values()))
    values = values[np.all(np.isfinite(values), axis=1)]
    modes = [m for _, m in OBJECTIVES]
    ref = grid_reference(values)
    ref_min = to_min(np.array([ref]), modes)[0]
    grid_hv = hypervolume(to_min(values, modes), ref_min)
    n_grid = len(table.values)
    budget = math.ceil(n_grid / 3)
    n_trials = trials or budget
    out: dict[str, Any] = {
        "table": str(table_path),
        "source": source,
        "grid_size": n_grid,
        "grid_hypervolume": grid_hv,
        "reference_point": dict(zip(["ap", "log10_trainable_pct", "latency_ms"], ref)),
        "budget_third": budget,
        "trials": n_trials,
        "seeds": seeds,
        "samplers": {},
    }
    for name in samplers or ["nsga2", "tpe", "gp", "random"]:
        t0 = time.time()
        curves = np.array([_run_one(name, s, n_trials, table, ref_min) for s in range(seeds)]) / grid_hv
        at = min(budget, n_trials) - 1
        reach = [int(np.argmax(c >= 0.95)) + 1 if np.any(c >= 0.95) else None for c in curves]
        out["samplers"][name] = {
            "mean_curve": curves.mean(axis=0).round(4).tolist(),
            "min_curve": curves.min(axis=0).round(4).tolist(),
            "mean_at_third": float(curves[:, at].mean()),
            "min_at_third": float(curves[:, at].min()),
            "trials_to_95pct": reach,
            "meets_target": bool(np.all(curves[:, at] >= 0.95)),
            "seconds": round(time.time() - t0, 2),
        }
    return out


def default_tables() -> list[Path]:
    """The shipped tables: the real recorded grid (when present) and the synthetic surrogate."""
    return [t for t in (REAL_TABLE, SURROGATE_TABLE) if t.exists()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table",
        action="append",
        default=None,
        help="recorded trial results (CSV); repeatable (default: the shipped real and surrogate tables)",
    )
    parser.add_argument(
        "--samplers",
        default="nsga2,tpe,random",
        help="comma-separated: nsga2,tpe,gp,random (gp: ~3 s per trial on 2 cores, opt-in)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--trials", type=int, default=None, help="trials per run (default: a third of the grid)"
    )
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def _print(res: dict[str, Any]) -> None:
    print(
        f"recorded table: {res['table']} (source: {res['source']}), grid {res['grid_size']} configs, "
        f"grid HV {res['grid_hypervolume']:.5g}, ref {res['reference_point']}"
    )
    print(
        f"target: >= 95% of grid HV within {res['budget_third']} trials (1/3 of the grid), "
        f"{res['seeds']} seeds; mean fraction of grid HV after n trials:"
    )
    marks = sorted({1, 5, 10, 20, 40, res["budget_third"], res["trials"]} & set(range(1, res["trials"] + 1)))
    print("sampler  " + " ".join(f"n={m:<5d}" for m in marks) + "  min@1/3  trials-to-95% per seed  target")
    for name, r in res["samplers"].items():
        row = " ".join(f"{r['mean_curve'][m - 1]:<7.3f}" for m in marks)
        print(
            f"{name:<8s} {row}  {r['min_at_third']:.3f}    {r['trials_to_95pct']}  "
            f"{'MET' if r['meets_target'] else 'not met'} ({r['seconds']}s)"
        )


def main(args: argparse.Namespace) -> int:
    from models.errors import UserError

    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    bad = [s for s in names if s not in ("nsga2", "tpe", "gp", "random")]
    if bad or not names:
        raise UserError(
            f"--samplers: unknown {bad[0] if bad else '(empty)'!r}; allowed: nsga2, tpe, gp, random"
        )
    if args.seeds < 1 or (args.trials is not None and args.trials < 1):
        raise UserError("--seeds and --trials must be >= 1")
    tables = args.table or default_tables()
    results = [run_bench(t, names, args.seeds, args.trials) for t in tables]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for k, res in enumerate(results):
        if k:
            print()
        _print(res)
    return 0
