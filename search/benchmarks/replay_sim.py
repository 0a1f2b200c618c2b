"""The engine replay in simulated time: the sweep's searcher and MO-ASHA, no Ray.

:mod:`search.benchmarks.engine_replay` replays recorded trials through a real Ray Tune experiment:
30-90 s per sweep on 2 cores, almost all of it Ray. Choosing early-stopping settings needs
hundreds of sweeps, so this module drives the *same* searcher
(:func:`search.engine.samplers.make_searcher`: TPE, the repeat filter, truthful tells) and the
same scheduler decisions (:meth:`search.engine.mo_asha.MOASHAScheduler.decide`) with an event queue
instead: ``concurrency`` slots, a trial's recorded evaluations arrive after the iterations
between them (one time unit per iteration), a free slot asks the searcher at once. About 0.6 s
per 51-trial sweep. With concurrency 1 the order of events is the one Tune produces, so both
replays train the same trials (``tests/search/test_replay_sim.py``); with more slots Tune's timing
differs from this clock, so figures agree in distribution, not seed by seed. Settings chosen
here are confirmed through Ray (``engine_replay``) on other seeds.

``python -m search.benchmarks.replay_sim --first-seed 100 --seeds 40 --stopping 0.25:3:epsnet,...``
prints, per early-stopping setting, the compute saved and the hypervolume kept against the same
sweeps without stopping (mean and worst seed). ``--oracle`` replays every evaluation with the
configuration's *final* AP (:func:`oracle_curves`): a perfect early predictor, which separates
what early stopping loses through early AP ranking final AP poorly from what the scheduler and
the sampler's diverging trajectories lose whatever the predictor.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.benchmarks.engine_replay import _NAMES, CurveTable, ReplayRun, _context, _hv, sweep_parts
from search.benchmarks.replay_trial import config_key
from search.config import EarlyStopping

__all__ = ["StoppingEffect", "simulate_replay", "stopping_effect", "parse_stopping", "oracle_curves"]


@dataclass
class _Running:
    tid: str
    key: str
    total: int
    reports: list[tuple[int, float]]  # recorded evaluations before the end
    next: int = 0  # index of the next report


def simulate_replay(
    ct: CurveTable,
    sampler: str,
    seed: int,
    trials: int,
    *,
    concurrency: int = 4,
    early_stopping: bool = True,
    stopping: EarlyStopping | None = None,
) -> ReplayRun:
    """One sweep of ``trials`` trained trials (as :func:`engine_replay.run_replay`, simulated)."""
    from ray.tune.schedulers import TrialScheduler

    searcher, scheduler = sweep_parts(ct, sampler, seed, early_stopping=early_stopping, stopping=stopping)
    ctx = _context(ct, 0.0)
    events: list[tuple[int, int, _Running]] = []
    order = itertools.count()  # ties in time: first scheduled, first served
    started = 0
    finished: list[tuple[list[float], str, int]] = []

    def start(now: int) -> None:
        nonlocal started
        tid = f"t{started:05d}"
        started += 1
        cfg = searcher.suggest(tid)
        if cfg is None or not isinstance(cfg, dict):
            raise RuntimeError(f"the searcher gave no point for trial {tid}")
        key = config_key(cfg, ctx.columns, ctx.numeric)
        total = int(cfg["iterations"])
        run = _Running(tid, key, total, [(it, ap) for it, ap in ctx.curves.get(key, []) if it < total])
        first = run.reports[0][0] if run.reports else total
        heapq.heappush(events, (now + first, next(order), run))

    def free_slot(now: int) -> None:
        if started < trials:
            start(now)

    for _ in range(min(concurrency, trials)):
        start(0)
    while events:
        now, _, run = heapq.heappop(events)
        vals = ctx.values[run.key]
        costs = {n: v for n, v in zip(_NAMES, vals) if n != "ap"}
        if run.next < len(run.reports):
            it, ap = run.reports[run.next]
            run.next += 1
            result: dict[str, Any] = {"iteration": it, "ap": ap, **costs, "status": "running", "final": False}
            if scheduler is not None and scheduler.decide(run.tid, result, run.total) == TrialScheduler.STOP:
                searcher.on_trial_complete(run.tid, result)
                finished.append(([math.nan] * len(_NAMES), "pruned", it))
                free_slot(now)
                continue
            after = run.reports[run.next][0] if run.next < len(run.reports) else run.total
            heapq.heappush(events, (now + after - it, next(order), run))
            continue
        ok = all(math.isfinite(v) for v in vals)
        final = {"iteration": run.total, "final": True, **costs, "status": "completed" if ok else "failed"}
        if ok:
            final["ap"] = vals[_NAMES.index("ap")]
        searcher.on_trial_complete(run.tid, final)
        finished.append((list(vals) if ok else [math.nan] * len(_NAMES), str(final["status"]), run.total))
        free_slot(now)
    return ReplayRun(
        values=np.array([v for v, _, _ in finished]).reshape(-1, len(_NAMES)),
        iterations_trained=sum(it for _, _, it in finished),
        pruned=sum(1 for _, s, _ in finished if s != "completed"),
        rejected=len(searcher.rejected),
        seconds=0.0,
        statuses=[s for _, s, _ in finished],
    )


@dataclass
class StoppingEffect:
    """Early stopping against the same sweeps without it, per seed."""

    label: str
    compute_saved: np.ndarray  # iterations without stopping / with
    hv_kept: np.ndarray  # HV with stopping / HV without
    hv_fraction: np.ndarray  # HV with stopping / the grid's

    def line(self) -> str:
        s, k, h = self.compute_saved, self.hv_kept, self.hv_fraction
        return (
            f"{self.label:<22} saved {s.mean():.2f}x (worst {s.min():.2f}x)  HV kept {k.mean():.3f} "
            f"(worst {k.min():.3f}, {int(np.sum(k < 0.95))} seeds < 0.95)  "
            f"of grid {h.mean():.3f} / {h.min():.3f}"
        )


def stopping_effect(
    ct: CurveTable,
    settings: Sequence[tuple[str, EarlyStopping]],
    seeds: Sequence[int],
    *,
    sampler: str = "tpe",
    trials: int | None = None,
    concurrency: int = 4,
) -> tuple[np.ndarray, list[StoppingEffect]]:
    """The HV fractions without stopping, and per labelled setting its :class:`StoppingEffect`."""
    from search.benchmarks.recorded import sweep_reference

    grid = ct.table.completed()
    ref = sweep_reference(grid)
    grid_hv = _hv(grid, ref)
    budget = trials or math.ceil(len(ct.table.values) / 3)
    base = [
        simulate_replay(ct, sampler, s, budget, concurrency=concurrency, early_stopping=False) for s in seeds
    ]
    base_hv = np.array([_hv(r.values, ref) for r in base])
    base_it = np.array([r.iterations_trained for r in base], dtype=float)
    out = []
    for label, es in settings:
        runs = [simulate_replay(ct, sampler, s, budget, concurrency=concurrency, stopping=es) for s in seeds]
        hv = np.array([_hv(r.values, ref) for r in runs])
        it = np.array([r.iterations_trained for r in runs], dtype=float)
        out.append(StoppingEffect(label, base_it / it, hv / np.maximum(base_hv, 1e-12), hv / grid_hv))
    return base_hv / grid_hv, out


def oracle_curves(ct: CurveTable) -> CurveTable:
    """``ct`` with every evaluation of a configuration reporting its final AP (same iterations)."""
    from dataclasses import replace

    return replace(ct, curves={k: [(it, c[-1][1]) for it, _ in c] for k, c in ct.curves.items()})


def parse_stopping(text: str) -> list[tuple[str, EarlyStopping]]:
    """``"0.25:3:epsnet,0.125:2:rank"`` -> labelled settings (grace fraction : eta : selection)."""
    from models.errors import UserError

    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            frac, eta, sel = part.split(":")
            es = EarlyStopping(grace_fraction=float(frac), reduction_factor=float(eta), selection=sel)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any malformed part is the same user error
            raise UserError(f"--stopping: {part!r} is not grace_fraction:eta:selection ({exc})") from None
        out.append((part, es))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import platform

    from search.benchmarks.engine_replay import load_curve_table
    from search.benchmarks.recorded import DEFAULT_TABLE

    ap = argparse.ArgumentParser(description="early-stopping settings on a recorded table, simulated replay")
    ap.add_argument("--table", default=str(DEFAULT_TABLE))
    ap.add_argument("--sampler", default="tpe")
    ap.add_argument("--first-seed", type=int, default=100, help="tuning seeds: keep them apart from 0-9")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--stopping", default="0.25:3:epsnet,0.25:3:rank,0.125:2:rank")
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="every evaluation reports the final AP (a perfect early predictor)",
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ct = load_curve_table(args.table)
    if args.oracle:
        ct = oracle_curves(ct)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    base, effects = stopping_effect(
        ct,
        parse_stopping(args.stopping),
        seeds,
        sampler=args.sampler,
        trials=args.trials,
        concurrency=args.concurrency,
    )
    print(
        f"{args.table}{' (oracle: every evaluation reports the final AP)' if args.oracle else ''}: "
        f"{args.sampler}, concurrency {args.concurrency}, seeds {seeds[0]}-{seeds[-1]}; "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'no early stopping':<22} HV of grid {base.mean():.3f} (worst {base.min():.3f})")
    for e in effects:
        print(e.line())
        print(f"{'':<22} per seed: saved {' '.join(f'{x:.2f}' for x in e.compute_saved)}")
        print(f"{'':<22}           kept  {' '.join(f'{x:.3f}' for x in e.hv_kept)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
