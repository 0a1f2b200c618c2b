"""``peftsweep bench search`` with the engine in the loop: recorded trials replayed through Ray Tune.

Each replayed sweep is a real Ray Tune experiment with the sweep's own parts: the searcher
(:func:`search.engine.samplers.make_searcher`: the sampler, the space's encoding, constraints
decided before a slot), MO-ASHA (:class:`search.engine.mo_asha.MOASHAScheduler`, rungs at fractions
of each trial's schedule) and ``max_concurrent_trials`` (4). Training is replaced by the recorded
table: a trial looks its configuration up and reports the recorded AP at every recorded evaluation
step (the table's ``ap_curve``), sleeping ``seconds_per_iteration`` per training iteration so that
trials overlap as they would on a cluster, then its final values. A trial MO-ASHA stops has spent
the iterations it reached; that is the *training compute* the bench counts.

Per sampler and seed it reports the hypervolume of the completed trials as a fraction of the
whole grid's (the sweep's reference point, :func:`search.benchmarks.recorded.sweep_reference`),
after ``budget`` trained trials (a third of the grid), and the iterations trained. With
``compare_stopping`` the default sampler also runs without early stopping (same seeds, same
budget), which gives the early-stopping figures: compute saved (ratio of iterations trained) and
the hypervolume kept (fraction of the same sweep's hypervolume without stopping).

Curves: the ``<stem>.curves.csv`` file beside the table that ``search.benchmarks.record_real_grid
--eval-every`` writes (one row per evaluation of one seeded run; the replay uses the mean AP over
seeds at each iteration, as the table's final AP is that mean), or an ``ap_curve`` column in the
table itself (JSON ``[[iteration, ap], ...]`` ascending). A table without curves replays with
early stopping off only (final values).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.benchmarks.recorded import (
    _KEY_COLS,
    _NUMERIC,
    OBJECTIVES,
    RecordedTable,
    _key,
    load_table,
    sweep_reference,
)
from search.benchmarks.replay_trial import ReplayContext, config_key, replay_trial
from search.config import EarlyStopping

if TYPE_CHECKING:
    from search.engine.mo_asha import MOASHAScheduler
    from search.engine.samplers import TruthfulOptunaSearch

__all__ = [
    "CurveTable",
    "ReplayRun",
    "load_curve_table",
    "run_replay",
    "sweep_parts",
    "run_engine_bench",
    "engine_runs_per_table",
]

_NAMES = [n for n, _ in OBJECTIVES]
_MODES = [m for _, m in OBJECTIVES]


@dataclass
class CurveTable:
    """A recorded grid with, per configuration, its AP curve ``[(iteration, ap), ...]``."""

    table: RecordedTable
    curves: dict[tuple[str, ...], list[tuple[int, float]]]
    path: str

    @property
    def has_curves(self) -> bool:
        return bool(self.curves)


def _parse_curve(text: str) -> list[tuple[int, float]]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = sorted((int(k), v) for k, v in data.items())
    return [(int(it), float(ap)) for it, ap in data]


def _side_curves(path: Path) -> dict[tuple[str, ...], list[tuple[int, float]]]:
    """Curves from ``<stem>.curves.csv`` (``search.benchmarks.record_real_grid``: one row per
    evaluation of one seeded run: the parameter columns, ``seed``, ``iteration``, ``ap``, ...,
    ``status``): per configuration the mean AP over its seeds at each iteration (the table's final
    AP is the same mean), failed evaluations left out."""
    import csv
    from collections import defaultdict

    acc: dict[tuple[str, ...], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("status") == "failed" or row.get("ap") in ("", None):
                continue
            ap = float(row["ap"])
            if math.isfinite(ap):
                acc[_key(row)][int(float(row["iteration"]))].append(ap)
    return {k: [(it, float(np.mean(v))) for it, v in sorted(its.items())] for k, its in acc.items()}


def load_curve_table(path: str | Path) -> CurveTable:
    """:func:`search.benchmarks.recorded.load_table` plus the ``ap_curve`` column when present."""
    import csv

    from models.errors import UserError

    table = load_table(path)
    curves: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            text = (row.get("ap_curve") or "").strip()
            if not text:
                continue
            try:
                curves[_key(row)] = _parse_curve(text)
            except (ValueError, TypeError) as exc:
                raise UserError(
                    f"{path}: row {i + 2}: ap_curve is not [[iteration, ap], ...] ({exc})"
                ) from None
    side = Path(path).with_name(Path(path).stem + ".curves.csv")
    if not curves and side.exists():
        curves = _side_curves(side)
    if curves and len(curves) != len(table.values):
        raise UserError(f"{path}: ap_curve missing on {len(table.values) - len(curves)} rows")
    return CurveTable(table, curves, str(path))


@dataclass
class ReplayRun:
    """One replayed sweep: the trials in the order they finished (values NaN unless completed)."""

    values: np.ndarray
    iterations_trained: int
    pruned: int
    rejected: int
    seconds: float
    statuses: list[str] = field(default_factory=list)


def _context(ct: CurveTable, seconds_per_iteration: float) -> ReplayContext:
    cols, num = tuple(_KEY_COLS), tuple(sorted(_NUMERIC))

    def k(key: tuple[str, ...]) -> str:
        return config_key(dict(zip(_KEY_COLS, key)), cols, ())  # fields are already normalised

    return ReplayContext(
        tuple(_NAMES),
        cols,
        num,
        {k(key): v.tolist() for key, v in ct.table.values.items()},
        {k(key): c for key, c in ct.curves.items()},
        seconds_per_iteration,
    )


def sweep_parts(
    ct: CurveTable,
    sampler: str,
    seed: int,
    *,
    early_stopping: bool = True,
    stopping: EarlyStopping | None = None,
) -> tuple[TruthfulOptunaSearch, MOASHAScheduler | None]:
    """The replayed sweep's searcher (:func:`search.engine.samplers.make_searcher` with the
    sampler's default settings) and its MO-ASHA (``stopping``, default a sweep's default; None when
    stopping is off or the table has no curves)."""
    from search.config import SamplerSettings
    from search.engine.mo_asha import MOASHAScheduler
    from search.engine.samplers import make_searcher

    defaults = SamplerSettings()
    searcher = make_searcher(
        sampler,
        seed,
        ct.table.space,
        _NAMES,
        _MODES,
        population_size=defaults.population_size,
        startup_trials=defaults.startup_trials,
    )
    if not (early_stopping and ct.has_curves):
        return searcher, None
    max_t = max(ct.table.space.iterations)
    return searcher, MOASHAScheduler.from_config(_NAMES, _MODES, stopping or EarlyStopping(), max_t)


def run_replay(
    ct: CurveTable,
    sampler: str,
    seed: int,
    trials: int,
    *,
    concurrency: int = 4,
    early_stopping: bool = True,
    seconds_per_iteration: float = 0.002,
    stopping: EarlyStopping | None = None,
) -> ReplayRun:
    """One sweep of ``trials`` trained trials through Ray Tune + the searcher (+ MO-ASHA with
    ``stopping``'s rungs and selection; default: a sweep's default)."""
    import ray
    from ray import tune

    searcher, scheduler = sweep_parts(ct, sampler, seed, early_stopping=early_stopping, stopping=stopping)
    ctx = _context(ct, seconds_per_iteration)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=max(concurrency, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
        )
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="peftsweep-replay-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(replay_trial, context=ctx), {"cpu": 0.01}),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=trials,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(name="replay", storage_path=tmp, verbose=0),
        )
        grid = tuner.fit()
        results = [grid[i] for i in range(len(grid))]
    rows: list[tuple[float, list[float], str, int]] = []
    for r in results:
        m = dict(r.metrics or {})
        done = m.get("final") is True and m.get("status") == "completed"
        vals = [float(m[n]) if done else math.nan for n in _NAMES]
        rows.append(
            (
                float(m.get("timestamp", 0.0)),
                vals,
                "completed" if done else ("failed" if m.get("status") == "failed" else "pruned"),
                int(m.get("iteration") or 0),
            )
        )
    rows.sort(key=lambda x: x[0])
    return ReplayRun(
        values=np.array([v for _, v, _, _ in rows]).reshape(-1, len(_NAMES)),
        iterations_trained=int(sum(it for _, _, _, it in rows)),
        pruned=sum(1 for _, _, s, _ in rows if s != "completed"),
        rejected=len(getattr(searcher, "rejected", [])),
        seconds=time.time() - t0,
        statuses=[s for _, _, s, _ in rows],
    )


def _hv(values: np.ndarray, ref: Sequence[float]) -> float:
    from search.results.pareto import hypervolume, to_min

    ok = np.all(np.isfinite(values), axis=1) if len(values) else np.zeros(0, dtype=bool)
    if not np.any(ok):
        return 0.0
    return hypervolume(to_min(values[ok], _MODES), to_min(np.array([ref]), _MODES)[0])


def engine_runs_per_table(
    table_path: str | Path, samplers: Sequence[str], seeds: int, compare_stopping: str | None = "tpe"
) -> int:
    """How many replayed sweeps :func:`run_engine_bench` runs on one table (for a progress total)."""
    extra = 0
    if compare_stopping and load_curve_table(table_path).has_curves:
        extra = seeds * (1 if compare_stopping in samplers else 2)
    return len(samplers) * seeds + extra


def run_engine_bench(
    table_path: str | Path,
    samplers: Sequence[str] = ("tpe", "nsga2", "random"),
    seeds: int = 10,
    *,
    trials: int | None = None,
    concurrency: int = 4,
    compare_stopping: str | None = "tpe",
    seconds_per_iteration: float = 0.002,
    progress: Any = None,
) -> dict[str, Any]:
    """Every sampler x seed through the engine; figures as in the module docstring. ``progress``
    (``models.progress.Progress`` with a task ``bench``) advances once per replayed sweep."""
    ct = load_curve_table(table_path)
    grid_vals = ct.table.completed()
    ref = sweep_reference(grid_vals)
    grid_hv = _hv(grid_vals, ref)
    n_grid = len(ct.table.values)
    budget = trials or math.ceil(n_grid / 3)
    out: dict[str, Any] = {
        "table": str(table_path),
        "source": ct.table.source,
        "grid_size": n_grid,
        "budget": budget,
        "concurrency": concurrency,
        "seeds": seeds,
        "early_stopping": ct.has_curves,
        "reference_point": dict(zip(_NAMES, ref)),
        "grid_hv": grid_hv,
        "samplers": {},
    }
    es = ct.has_curves

    def one(name: str, stop: bool) -> dict[str, Any]:
        runs = []
        for s in range(seeds):
            if progress is not None:
                label = "" if stop or not es else ", no stopping"
                progress.update("bench", info=f"{Path(table_path).name}: {name} seed {s}{label}")
            runs.append(
                run_replay(
                    ct,
                    name,
                    s,
                    budget,
                    concurrency=concurrency,
                    early_stopping=stop,
                    seconds_per_iteration=seconds_per_iteration,
                )
            )
            if progress is not None:
                progress.update("bench", advance=1)
        fr = np.array([_hv(r.values, ref) / grid_hv for r in runs])
        return {
            "hv_fraction": fr.round(4).tolist(),
            "mean": float(fr.mean()),
            "worst": float(fr.min()),
            "iterations_trained": [r.iterations_trained for r in runs],
            "pruned": [r.pruned for r in runs],
            "seconds": round(sum(r.seconds for r in runs), 1),
        }

    for name in samplers:
        out["samplers"][name] = one(name, es)
    if es and compare_stopping:
        base = out["samplers"].get(compare_stopping) or one(compare_stopping, True)
        off = one(compare_stopping, False)
        saved = np.array(off["iterations_trained"]) / np.array(base["iterations_trained"])
        kept = np.array(base["hv_fraction"]) / np.maximum(np.array(off["hv_fraction"]), 1e-12)
        out["without_stopping"] = {compare_stopping: off}
        out["early_stopping_effect"] = {
            "sampler": compare_stopping,
            "compute_saved_x": saved.round(3).tolist(),
            "compute_saved_mean": float(saved.mean()),
            "compute_saved_worst": float(saved.min()),
            "hv_kept": kept.round(4).tolist(),
            "hv_kept_mean": float(kept.mean()),
            "hv_kept_worst": float(kept.min()),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search.benchmarks.engine_replay``: runs one by one, each appended to ``--log``
    (JSON lines: a killed bench keeps what it measured), then the summary."""
    import argparse
    import platform

    from search.benchmarks.recorded import DEFAULT_TABLE

    ap = argparse.ArgumentParser(description="bench search with the engine in the loop")
    ap.add_argument("--table", default=str(DEFAULT_TABLE))
    ap.add_argument("--samplers", default="tpe,nsga2,random")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--trials", type=int, default=None, help="trained trials per sweep (default: 1/3 of the grid)"
    )
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-stopping", action="store_true", help="also run without early stopping")
    ap.add_argument("--seconds-per-iteration", type=float, default=0.0)
    ap.add_argument("--log", default=None, help="append one JSON line per run here")
    args = ap.parse_args(list(argv) if argv is not None else None)
    ct = load_curve_table(args.table)
    grid_vals = ct.table.completed()
    ref = sweep_reference(grid_vals)
    grid_hv = _hv(grid_vals, ref)
    budget = args.trials or math.ceil(len(ct.table.values) / 3)
    modes = [True] + ([False] if args.no_stopping and ct.has_curves else [])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in [s.strip() for s in args.samplers.split(",") if s.strip()]:
            for stop in modes:
                r = run_replay(
                    ct,
                    name,
                    seed,
                    budget,
                    concurrency=args.concurrency,
                    early_stopping=stop and ct.has_curves,
                    seconds_per_iteration=args.seconds_per_iteration,
                )
                line = {
                    "table": args.table,
                    "sampler": name,
                    "seed": seed,
                    "early_stopping": stop and ct.has_curves,
                    "trials": budget,
                    "concurrency": args.concurrency,
                    "hv_fraction": _hv(r.values, ref) / grid_hv,
                    "iterations_trained": r.iterations_trained,
                    "pruned": r.pruned,
                    "seconds": round(r.seconds, 1),
                    "machine": machine,
                    "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                print(json.dumps(line), flush=True)
                if args.log:
                    with open(args.log, "a") as fh:
                        fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
