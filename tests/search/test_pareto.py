"""Pareto set, hypervolume and knee point against independent brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from search.config import Constraint
from search.results.pareto import (
    compute_front,
    compute_fronts,
    crowding_distance,
    hypervolume,
    hypervolume_history,
    knee_index,
    non_dominated_mask,
    non_dominated_ranks,
    reference_point,
    to_min,
)


def _brute_nd(p: np.ndarray) -> np.ndarray:
    n = len(p)
    return np.array(
        [not any(np.all(p[j] <= p[i]) and np.any(p[j] < p[i]) for j in range(n) if j != i) for i in range(n)]
    )


def _hv_inclusion_exclusion(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact union volume of the boxes [p_i, ref] by inclusion-exclusion (independent of HSO)."""
    p = p[np.all(p < ref, axis=1)]
    total = 0.0
    for k in range(1, len(p) + 1):
        for sub in itertools.combinations(range(len(p)), k):
            corner = p[list(sub)].max(axis=0)
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


@pytest.mark.parametrize("dim", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_inclusion_exclusion(dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 10)
    p = rng.random((n, dim))
    if seed % 2:  # ties and duplicates
        p = np.round(p, 1)
        p = np.vstack([p, p[:1]])
    ref = np.full(dim, 1.05)
    assert hypervolume(p, ref) == pytest.approx(_hv_inclusion_exclusion(p, ref), rel=1e-12, abs=1e-12)


def test_hypervolume_matches_monte_carlo_3d() -> None:
    rng = np.random.default_rng(7)
    p = rng.random((40, 3))
    ref = np.array([1.0, 1.2, 1.1])
    samples = rng.random((150_000, 3)) * ref
    dominated = np.zeros(len(samples), dtype=bool)
    for q in p:
        dominated |= np.all(samples >= q, axis=1)
    mc = dominated.mean() * np.prod(ref)
    assert hypervolume(p, ref) == pytest.approx(mc, rel=0.02)


def test_hypervolume_simple_cases() -> None:
    assert hypervolume(np.array([[0.0, 0.0]]), [1.0, 2.0]) == 2.0
    assert hypervolume(np.array([[0.5, 0.5], [0.0, 1.0]]), [1.0, 1.0]) == 0.25
    # a point outside the reference box adds nothing
    assert hypervolume(np.array([[2.0, 0.0]]), [1.0, 1.0]) == 0.0
    assert hypervolume(np.zeros((0, 3)), [1.0, 1.0, 1.0]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.random((30, 3)), 1)
    np.testing.assert_array_equal(non_dominated_mask(p), _brute_nd(p))
    ranks = non_dominated_ranks(p)
    # rank r points are non-dominated once ranks < r are removed, and each is dominated by some rank r-1 point
    for r in range(1, ranks.max() + 1):
        for i in np.where(ranks == r)[0]:
            prev = p[ranks == r - 1]
            assert any(np.all(q <= p[i]) and np.any(q < p[i]) for q in prev)


def test_to_min_and_crowding() -> None:
    v = np.array([[0.5, 2.0], [0.7, 3.0]])
    np.testing.assert_array_equal(to_min(v, ["max", "min"]), [[-0.5, 2.0], [-0.7, 3.0]])
    c = crowding_distance(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.25, 0.8]]))
    assert np.isinf(c[0]) and np.isinf(c[2]) and np.isfinite(c[1])


def test_knee_point() -> None:
    front = np.array([[0.0, 1.0], [0.1, 0.2], [0.5, 0.1], [1.0, 0.0]])
    assert knee_index(front) == 1


def _df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": list("abcdefg"),
            "domain": ["x", "x", "x", "x", "y", "y", "x"],
            "status": [
                "completed",
                "completed",
                "completed",
                "pruned",
                "completed",
                "completed",
                "completed",
            ],
            "ap": [0.5, 0.4, 0.3, 0.9, 0.2, 0.1, 0.45],
            "trainable_pct": [2.0, 1.0, 3.0, 0.1, 1.0, 2.0, 0.5],
            "latency_ms": [10.0, 10.0, 10.0, 1.0, 5.0, 5.0, 60.0],
        }
    )


def test_compute_front_filters_status_and_constraints() -> None:
    df = _df()
    names, modes = ["ap", "trainable_pct", "latency_ms"], ["max", "min", "min"]
    fr = compute_front(
        df[df.domain == "x"],
        names,
        modes,
        [0.0, 100.0, None],
        [Constraint(metric="latency_ms", op="<=", value=50)],
        domain="x",
    )
    # d is pruned (truncated values), g violates latency, c is dominated by a
    assert set(fr.front.trial_id) == {"a", "b"}
    assert fr.ref == [0.0, 100.0, 50.0]  # latency ref = the constraint bound
    expect = hypervolume(
        to_min(np.array([[0.5, 2, 10], [0.4, 1, 10]]), modes), to_min(np.array([fr.ref]), modes)[0]
    )
    assert fr.hypervolume == pytest.approx(expect)
    assert fr.n_considered == 3 and fr.n_total == 5
    # objective subset: (ap, trainable_pct) without constraint -> g joins the front and dominates b
    fr2 = compute_front(df[df.domain == "x"], ["ap", "trainable_pct"], ["max", "min"], domain="x")
    assert set(fr2.front.trial_id) == {"a", "g"}
    fronts = compute_fronts(df, names, modes)
    assert set(fronts) == {"x", "y"} and list(fronts["y"].front.trial_id) == ["e"]


def test_reference_point_rules_and_history() -> None:
    v = np.array([[0.5, 2.0], [0.3, 4.0]])
    assert reference_point(["ap", "latency_ms"], ["max", "min"], [None, None], v) == pytest.approx(
        [0.28, 4.2]
    )
    assert reference_point(["ap", "latency_ms"], ["max", "min"], [0.0, None], v, {"latency_ms": 9.0}) == [
        0.0,
        9.0,
    ]
    df = _df()[_df().domain == "x"].assign(finished_at=[1, 2, 3, 4, 5])
    h = hypervolume_history(df, ["ap", "trainable_pct"], ["max", "min"], [0.0, 4.0])
    assert len(h) == 5 and all(b >= a for a, b in zip(h, h[1:]))
    assert h[0] == pytest.approx(0.5 * 2.0) and h[3] == h[2]  # the pruned trial changes nothing
