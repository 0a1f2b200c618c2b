"""``peftsweep bench search``: how fast each sampler finds the front, on recorded trial results.

The recorded table (``search/benchmarks/tables/recorded_trials.csv``, one row per point of an exhaustive grid;
its ``source`` column says whether rows are measured (``real``, see
``search/benchmarks/record_real_grid.py``) or the labelled synthetic surrogate
(``search/benchmarks/make_recorded_trials.py``)) replaces training: a trial looks its configuration up.
Each sampler (the same :func:`search.engine.samplers.make_sampler` with a sweep's default settings and
the same define-by-run :class:`search.engine.space.SearchSpace`, without Ray) runs ``--trials`` trials for
each of ``--seeds`` seeds. After every trial the hypervolume of the completed trials is computed
and reported as a fraction of the whole grid's hypervolume, under two reference points:

- ``sweep`` (the target): the hypervolume a sweep reports in ``fronts.json`` for the default
  objectives, AP (max, ref 0), trainable % (min, ref 100), latency ms (min, ref: worst grid value
  + 10 % of the grid's range) — :func:`search.results.pareto.reference_point`, same units, same rule;
- ``front`` (a harder diagnostic): trainable % on a log10 scale and the reference just outside the
  grid's Pareto front (nadir + 10 % of the front's range), so only the front region counts and a
  single best point the sampler has not met yet can cost much of the hypervolume.

Each sampler gets the space encoded as a sweep's searcher encodes it for that sampler (TPE's
conditional space with ``group=True``; NSGA-II and GP the flat encoding, see
:mod:`search.engine.samplers`). ``--engine`` replays the table through the engine instead (Ray
Tune, the searcher, MO-ASHA, ``--concurrency`` trials at once: :mod:`search.benchmarks.engine_replay`).

Target: >= 95 % of the grid's hypervolume (``sweep`` reference) within a third of the grid's trials,
on the mean over seeds (the curve the bench reports); the worst seed and how many seeds reach it
alone are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.progress import Progress
from search.benchmarks.recorded import (
    _MODES,
    DEFAULT_TABLE,
    OBJECTIVES,
    REAL_TABLE,
    SURROGATE_TABLE,
    RecordedTable,
    _key,
    default_tables,
    load_table,
    sweep_reference,
)
from search.config import SamplerSettings

__all__ = [
    "REAL_TABLE",
    "SURROGATE_TABLE",
    "DEFAULT_TABLE",
    "RecordedTable",
    "HVView",
    "VIEWS",
    "default_tables",
    "OBJECTIVES",
    "load_table",
    "sweep_reference",
    "front_reference",
    "run_bench",
    "add_arguments",
    "main",
]


def _log_pct(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=float, copy=True)
    j = [n for n, _ in OBJECTIVES].index("trainable_pct")
    out[:, j] = np.log10(np.clip(out[:, j], 1e-12, None))
    return out


def front_reference(values: np.ndarray) -> list[float]:
    """Reference point of the ``front`` view (trainable % as log10): the nadir of the grid's Pareto
    front moved out by 10 % of the front's range per objective."""
    from search.results.pareto import non_dominated_mask, to_min

    vmin = to_min(_log_pct(values), _MODES)
    front = vmin[non_dominated_mask(vmin)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    ref_min = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
    return [float(-r) if m == "max" else float(r) for r, m in zip(ref_min, _MODES)]


@dataclass(frozen=True)
class HVView:
    """How a bench measures hypervolume: a transform of the objective values and a reference rule
    (both in the transformed units, as the reference point is reported)."""

    name: str
    transform: Callable[[np.ndarray], np.ndarray]
    reference: Callable[[np.ndarray], list[float]]


VIEWS: list[HVView] = [
    HVView("sweep", lambda v: np.asarray(v, dtype=float), sweep_reference),
    HVView("front", _log_pct, front_reference),
]
TARGET_VIEW = "sweep"
TARGET_FRACTION = 0.95


def _sample(sampler_name: str, seed: int, n_trials: int, table: RecordedTable) -> np.ndarray:
    """Objective values (original units; NaN rows = failed) of the trials one sampler asks for."""
    import optuna

    from search.engine.samplers import encoding_for, make_sampler
    from search.engine.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defaults = SamplerSettings()
    sampler = make_sampler(
        sampler_name, seed, population_size=defaults.population_size, startup_trials=defaults.startup_trials
    )
    space = SearchSpace(table.space, encoding=encoding_for(sampler))  # as a sweep's searcher encodes it
    study = optuna.create_study(
        directions=["maximize" if m == "max" else "minimize" for m in _MODES], sampler=sampler
    )
    seen: list[np.ndarray] = []
    for _ in range(n_trials):
        trial = study.ask()
        space(trial)
        vals = table.values[_key(space.active(trial.params))]
        if np.all(np.isfinite(vals)):
            study.tell(trial, vals.tolist())
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        seen.append(vals)
    return np.array(seen)


def _hv_curve(seen: np.ndarray, view: HVView, ref: list[float]) -> list[float]:
    """HV after each trial asked (failed trials leave it unchanged): the sweep's own history rule."""
    import pandas as pd

    from search.results.pareto import hypervolume_history

    names = [n for n, _ in OBJECTIVES]
    vals = view.transform(seen)
    trials = pd.DataFrame(vals, columns=names)
    trials["status"] = np.where(np.all(np.isfinite(vals), axis=1), "completed", "failed")
    return hypervolume_history(trials, names, _MODES, ref)


def run_bench(
    table_path: str | Path = DEFAULT_TABLE,
    samplers: list[str] | None = None,
    seeds: int = 5,
    trials: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Curves of HV fraction vs trials per sampler and view (mean/min over seeds); the target check.
    ``progress`` (``models.progress.Progress``) is advanced once per sampler run (task ``bench``)."""
    from search.results.pareto import hypervolume, to_min

    table = load_table(table_path)
    values = table.completed()
    n_grid = len(table.values)
    budget = math.ceil(n_grid / 3)
    n_trials = trials or budget
    at = min(budget, n_trials) - 1
    views: dict[str, dict[str, Any]] = {}
    for view in VIEWS:
        ref = view.reference(values)
        grid_hv = hypervolume(to_min(view.transform(values), _MODES), to_min(np.array([ref]), _MODES)[0])
        views[view.name] = {"reference_point": dict(zip([n for n, _ in OBJECTIVES], ref)), "grid_hv": grid_hv}
    out: dict[str, Any] = {
        "table": str(table_path),
        "source": table.source,
        "grid_size": n_grid,
        "views": views,
        "target": (
            f">= {TARGET_FRACTION:.0%} of the grid HV ({TARGET_VIEW} reference) within 1/3 of the grid, "
            "mean over seeds"
        ),
        "budget_third": budget,
        "trials": n_trials,
        "seeds": seeds,
        "samplers": {},
    }
    for name in samplers or ["nsga2", "tpe", "gp", "random"]:
        t0 = time.time()
        seen = []
        for s in range(seeds):
            if progress is not None:
                progress.update("bench", info=f"{Path(table_path).name}: {name} seed {s}")
            seen.append(_sample(name, s, n_trials, table))
            if progress is not None:
                progress.update("bench", advance=1)
        res: dict[str, Any] = {"seconds": 0.0}
        for view in VIEWS:
            v = views[view.name]
            curves = np.array([_hv_curve(x, view, list(v["reference_point"].values())) for x in seen])
            curves /= v["grid_hv"]
            reach = [
                int(np.argmax(c >= TARGET_FRACTION)) + 1 if np.any(c >= TARGET_FRACTION) else None
                for c in curves
            ]
            res[view.name] = {
                "mean_curve": curves.mean(axis=0).round(4).tolist(),
                "min_curve": curves.min(axis=0).round(4).tolist(),
                "mean_at_third": float(curves[:, at].mean()),
                "min_at_third": float(curves[:, at].min()),
                "trials_to_target": reach,
                "seeds_at_target": int(np.sum(curves[:, at] >= TARGET_FRACTION)),
                "meets_target": bool(curves[:, at].mean() >= TARGET_FRACTION),
            }
        res["meets_target"] = res[TARGET_VIEW]["meets_target"]
        res["seconds"] = round(time.time() - t0, 2)
        out["samplers"][name] = res
    return out


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
    parser.add_argument(
        "--engine",
        action="store_true",
        help="replay through the engine: Ray Tune + the searcher + MO-ASHA at --concurrency "
        "(search.benchmarks.engine_replay; slow: seconds per trial)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="trials at once with --engine")
    parser.add_argument("--quiet", action="store_true", help="no progress display (figures only)")


def _print(res: dict[str, Any]) -> None:
    print(f"recorded table: {res['table']} (source: {res['source']}), grid {res['grid_size']} configs")
    for name, v in res["views"].items():
        ref = ", ".join(f"{k}={x:.4g}" for k, x in v["reference_point"].items())
        unit = " (trainable_pct as log10)" if name == "front" else ""
        print(f"  {name:<5s} reference{unit}: {ref}; grid HV {v['grid_hv']:.5g}")
    print(
        f"target: >= {TARGET_FRACTION:.0%} of grid HV ({TARGET_VIEW} reference) within {res['budget_third']} "
        f"trials (1/3 of the grid), mean over {res['seeds']} seeds; mean fraction of grid HV after "
        "n trials:"
    )
    marks = sorted({1, 5, 10, 20, 40, res["budget_third"], res["trials"]} & set(range(1, res["trials"] + 1)))
    cols = " ".join(f"n={m:<5d}" for m in marks)
    print(
        f"sampler  view   {cols}  min@1/3  seeds>={TARGET_FRACTION:.0%}  "
        f"trials-to-{TARGET_FRACTION:.0%} per seed"
    )
    for name, r in res["samplers"].items():
        for view in res["views"]:
            c = r[view]
            row = " ".join(f"{c['mean_curve'][m - 1]:<7.3f}" for m in marks)
            verdict = ""
            if view == TARGET_VIEW:
                verdict = f"  target {'MET' if c['meets_target'] else 'not met'} ({r['seconds']}s)"
            print(
                f"{name:<8s} {view:<6s} {row}  {c['min_at_third']:.3f}    "
                f"{c['seeds_at_target']}/{res['seeds']}       {c['trials_to_target']}{verdict}"
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
    # Progress on stderr (stdout is the figures or the JSON): a bar on a terminal, else plain lines,
    # nothing with --quiet. One unit = one replayed sweep (sampler x seed x table).
    mode = "off" if getattr(args, "quiet", False) else "auto"
    if getattr(args, "engine", False):
        from search.benchmarks.engine_replay import engine_runs_per_table, run_engine_bench

        if args.concurrency < 1:
            raise UserError("--concurrency must be >= 1")
        with Progress(mode) as progress:
            progress.add(
                "bench",
                "bench search --engine",
                sum(engine_runs_per_table(t, names, args.seeds) for t in tables),
            )
            out = [
                run_engine_bench(
                    t, names, args.seeds, trials=args.trials, concurrency=args.concurrency, progress=progress
                )
                for t in tables
            ]
        print(json.dumps(out, indent=1))
        return 0
    with Progress(mode) as progress:
        progress.add("bench", "bench search", len(tables) * len(names) * args.seeds)
        results = [run_bench(t, names, args.seeds, args.trials, progress=progress) for t in tables]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for k, res in enumerate(results):
        if k:
            print()
        _print(res)
    return 0
