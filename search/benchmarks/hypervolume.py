"""Hypervolume timing: ``search.results.pareto.hypervolume`` (moocore) against the alternatives.

``python -m search.benchmarks.hypervolume [--points 1000] [--dims 3] [--repeats 5] [--hso]``

Random non-dominated-rich fronts (points on the unit sphere's positive orthant, minimisation,
reference 1.1 per objective). Prints seconds per call (best and median of ``--repeats``) for
moocore (what the sweep uses), Optuna's WFG (``optuna._hypervolume``, private) and, with
``--hso``, the pure-Python recursive slicing the project used before (slow: ~36 s for 1,000 3-D
points), with the values to show they agree. Target: 1,000 3-D points <= 0.1 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

__all__ = ["sphere_front", "hso_hypervolume", "time_call", "main"]


def sphere_front(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``n`` points on the positive orthant of the unit sphere in ``k`` dimensions (mutually
    non-dominated: the hard case for hypervolume)."""
    x = np.abs(np.random.default_rng(seed).normal(size=(n, k)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hso_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """The project's earlier exact code: slicing along the last objective (HSO), a sweep in 2-D."""
    from search.results.pareto import non_dominated_mask

    def hv2(p: np.ndarray, r: np.ndarray) -> float:
        total, best_y = 0.0, r[1]
        for i in np.argsort(p[:, 0], kind="stable"):
            x, y = p[i]
            if y < best_y:
                total += (r[0] - x) * (best_y - y)
                best_y = y
        return total

    def hv(p: np.ndarray, r: np.ndarray) -> float:
        k = p.shape[1]
        if p.shape[0] == 0:
            return 0.0
        if k == 1:
            return float(r[0] - p[:, 0].min())
        if k == 2:
            return hv2(p, r)
        q = p[np.argsort(p[:, -1], kind="stable")]
        total = 0.0
        for i in range(q.shape[0]):
            top = q[i + 1, -1] if i + 1 < q.shape[0] else r[-1]
            height = top - q[i, -1]
            if height <= 0:
                continue
            sub = q[: i + 1, :-1]
            total += height * hv(sub[non_dominated_mask(sub)], r[:-1])
        return total

    r = np.asarray(ref, dtype=float)
    p = np.asarray(points, dtype=float).reshape(-1, r.size)
    p = p[np.all(p < r, axis=1)]
    if p.shape[0] == 0:
        return 0.0
    return float(hv(p[non_dominated_mask(p)], r))


def time_call(fn: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """(value, best seconds, median seconds) over ``repeats`` calls."""
    times, value = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return value, min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import optuna._hypervolume as optuna_hv

    from search.results.pareto import hypervolume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--dims", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hso", action="store_true", help="also time the earlier pure-Python code (slow)")
    args = ap.parse_args(argv)
    pts = sphere_front(args.points, args.dims)
    ref = np.full(args.dims, 1.1)
    print(
        f"hypervolume of {args.points} {args.dims}-D points (unit sphere front), ref 1.1; "
        f"{platform.processor() or platform.machine()}, {args.repeats} repeats"
    )
    rows = [
        ("moocore (search.results.pareto)", lambda: hypervolume(pts, ref), args.repeats),
        ("optuna WFG (private)", lambda: float(optuna_hv.compute_hypervolume(pts, ref)), args.repeats),
    ]
    if args.hso:
        rows.append(("earlier exact HSO (python)", lambda: hso_hypervolume(pts, ref), 1))
    for name, fn, reps in rows:
        value, best, med = time_call(fn, reps)
        print(f"{name:<34s} value {value:.10f}  best {best:.4f} s  median {med:.4f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
