"""Which TPE settings the sweep's default sampler uses, decided on *tuning* seeds only.

``bench search`` reports seeds 0, 1, ...; choosing sampler settings on those seeds would tune the
figures it reports. This module compares settings on other seeds (default 100-109) on the real
recorded table, in a cheap replay of what the engine does at ``--concurrency`` trials at once:
``concurrency`` points are asked before the first is told, and each finished trial is told before
the next ask (all trials of the table train the same number of iterations, so they finish in the
order they started, as in the engine replay). No Ray: the searcher's sampler and encoding only
(:mod:`search.engine.samplers`), so a setting costs seconds instead of an engine sweep's minutes.

Usage::

    python -m search.benchmarks.sampler_settings [--seeds 100-109] [--concurrency 4] [VARIANT ...]

Prints, per variant, the hypervolume fraction of the grid's (sweep reference) after a third of the
grid's trials: mean, worst seed and every seed. The recorded outcome is in
``sampler_settings_cpu.txt``.
"""

from __future__ import annotations

import argparse
import collections
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.benchmarks.recorded import _MODES, REAL_TABLE, RecordedTable, _key, load_table, sweep_reference

__all__ = ["VARIANTS", "replay_async", "compare", "main"]


def _tpe(**kw: Any) -> Callable[[int], Any]:
    def make(seed: int) -> Any:
        import optuna

        base: dict[str, Any] = {"n_startup_trials": 4, "multivariate": True, "group": True}
        return optuna.samplers.TPESampler(seed=seed, **{**base, **kw})

    return make


def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# name -> (sampler factory, space encoding, skip repeats). "tpe" is the sweep default
# (search.engine.samplers: group decomposition, 4 startup trials, optuna 5's default constant liar
# for running trials, repeats of trained points not trained again: search.engine.repeats).
VARIANTS: dict[str, tuple[Callable[[int], Any], str, bool]] = {
    "tpe": (_tpe(), "conditional", True),
    "tpe-repeats": (_tpe(), "conditional", False),
    "tpe-no-liar": (_tpe(constant_liar=False), "conditional", True),
    "tpe-startup8": (_tpe(n_startup_trials=8), "conditional", True),
    "tpe-startup10": (_tpe(n_startup_trials=10), "conditional", True),
    "tpe-ei64": (_tpe(n_ei_candidates=64), "conditional", True),
    "tpe-ei64-startup8": (_tpe(n_ei_candidates=64, n_startup_trials=8), "conditional", True),
    "tpe-prior2": (_tpe(prior_weight=2.0), "conditional", True),
    "tpe-flat": (_tpe(group=False), "flat", True),
    "random": (_random, "conditional", True),
    "random-repeats": (_random, "conditional", False),
}


def replay_async(
    table: RecordedTable,
    make: Callable[[int], Any],
    encoding: str,
    seed: int,
    trials: int,
    concurrency: int,
    skip_repeats: bool = True,
) -> np.ndarray:
    """Objective values of the trials, in the order they were told (see module docstring). With
    ``skip_repeats`` a proposal of a trained or running point is told as a repeat and asked again,
    as the sweep's searcher does (:mod:`search.engine.repeats`)."""
    import optuna

    from search.engine.repeats import RepeatIndex, point_key, running_keys
    from search.engine.space import SearchSpace

    study = optuna.create_study(
        directions=["maximize" if m == "max" else "minimize" for m in _MODES], sampler=make(seed)
    )
    space = SearchSpace(table.space, encoding=encoding)
    index = RepeatIndex(space.points())
    running: collections.deque[Any] = collections.deque()
    seen: list[np.ndarray] = []
    asked = 0

    def ask() -> Any:
        in_a_row = 0
        while True:
            t = study.ask()
            space(t)
            keys = running_keys((point_key(space.active(r.params)), r.number) for r in running)
            if not (
                skip_repeats and index.screen(study, t, point_key(space.active(t.params)), keys, in_a_row)
            ):
                return t
            in_a_row += 1

    while len(seen) < trials:
        while len(running) < concurrency and asked < trials:
            running.append(ask())
            asked += 1
        t = running.popleft()
        active = space.active(t.params)
        vals = table.values[_key(active)]
        if np.all(np.isfinite(vals)):
            study.tell(t, vals.tolist())
            index.add_values(point_key(active), t.number, vals.tolist(), {})
        else:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        seen.append(vals)
    return np.array(seen)


def compare(
    names: Sequence[str],
    seeds: Sequence[int],
    *,
    table_path: str | Path = REAL_TABLE,
    concurrency: int = 4,
    trials: int | None = None,
) -> dict[str, list[float]]:
    """HV fraction of the grid's after ``trials`` (default: a third of the grid), per variant and seed."""
    import optuna

    from search.results.pareto import hypervolume, to_min

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(table_path)
    values = table.completed()
    ref = to_min(np.array([sweep_reference(values)]), _MODES)[0]
    grid_hv = hypervolume(to_min(values, _MODES), ref)
    n = trials or math.ceil(len(table.values) / 3)
    out: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's experimental / deprecation warnings
        for name in names:
            make, encoding, skip_repeats = VARIANTS[name]
            fr = []
            for s in seeds:
                seen = replay_async(table, make, encoding, s, n, concurrency, skip_repeats)
                ok = np.all(np.isfinite(seen), axis=1)
                fr.append(hypervolume(to_min(seen[ok], _MODES), ref) / grid_hv)
            out[name] = fr
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="TPE settings on tuning seeds (not the reported ones)")
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), help=", ".join(VARIANTS))
    ap.add_argument("--seeds", default="100-109", help="FIRST-LAST (inclusive): the tuning seeds")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--table", default=str(REAL_TABLE))
    a = ap.parse_args(list(argv) if argv is not None else None)
    first, _, last = a.seeds.partition("-")
    seeds = list(range(int(first), int(last or first) + 1))
    res = compare(a.variants, seeds, table_path=a.table, concurrency=a.concurrency)
    print(f"HV fraction of the grid at 1/3 of its trials, concurrency {a.concurrency}, seeds {a.seeds}")
    for name, fr in res.items():
        print(f"{name:<18s} mean {np.mean(fr):.4f}  worst {np.min(fr):.4f}  {[round(x, 3) for x in fr]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
