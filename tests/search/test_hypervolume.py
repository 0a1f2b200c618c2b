"""Hypervolume through moocore, cross-checked against the project's earlier exact code (HSO)."""

from __future__ import annotations

import numpy as np
import pytest

from search.benchmarks.hypervolume import hso_hypervolume, sphere_front
from search.results.pareto import hypervolume


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_matches_earlier_exact_code_on_random_fronts(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40 if k < 4 else 20
    # Dominated points, duplicates, and points outside the reference box mixed in.
    pts = rng.random((n, k))
    pts = np.vstack([pts, pts[:3], rng.random((5, k)) + 1.0, sphere_front(n, k, seed)])
    ref = np.full(k, 1.2)
    assert hypervolume(pts, ref) == pytest.approx(hso_hypervolume(pts, ref), rel=1e-10, abs=1e-12)


def test_known_values_and_edge_cases() -> None:
    # Two boxes of area 2 and 2 overlapping in 1: union 3.
    assert hypervolume(np.array([[0.0, 1.0], [1.0, 0.0]]), [2.0, 2.0]) == pytest.approx(3.0)
    # A unit cube corner: volume 1; a point on the reference boundary adds nothing.
    assert hypervolume(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert hypervolume(np.zeros((0, 3)), [1.0, 1.0, 1.0]) == 0.0
    assert hypervolume(np.array([[2.0, 2.0]]), [1.0, 1.0]) == 0.0
    assert hypervolume(np.array([[0.25], [0.5]]), [1.0]) == pytest.approx(0.75)


def test_large_front_matches_optuna() -> None:
    """1,000 mutually non-dominated 3-D points (the benchmark's case) agree with Optuna's WFG."""
    import optuna._hypervolume as optuna_hv

    pts = sphere_front(1000, 3)
    ref = np.full(3, 1.1)
    assert hypervolume(pts, ref) == pytest.approx(float(optuna_hv.compute_hypervolume(pts, ref)), rel=1e-9)
