"""Fréchet distance and MMD against independent closed forms / naive loops; the stats store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from models.errors import UserError
from search.selection.shift import FeatureStats, feature_stats, frechet_distance, measure_shift, mmd_rbf
from search.selection.similarity import (
    feature_key_for,
    list_domain_stats,
    load_domain_stats,
    nearest_domains,
    record_domain_stats,
)


def gauss(mean: np.ndarray, cov: np.ndarray) -> FeatureStats:
    return FeatureStats(mean=mean, cov=cov, count=100, sample=np.zeros((2, len(mean))))


def test_frechet_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = float(((m1 - m2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())
    assert frechet_distance(gauss(m1, np.diag(s1)), gauss(m2, np.diag(s2))) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_full_covariance_matches_scipy_sqrtm() -> None:
    # Independent route: the FID formula with a general matrix square root of the product.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    a, b = x @ x.T + 0.1 * np.eye(6), y @ y.T + 0.1 * np.eye(6)
    covmean = np.real(scipy.linalg.sqrtm(a @ b))
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    expected = float(((m1 - m2) ** 2).sum() + np.trace(a) + np.trace(b) - 2 * np.trace(covmean))
    assert frechet_distance(gauss(m1, a), gauss(m2, b)) == pytest.approx(expected, rel=1e-8)


def test_frechet_rank_deficient_is_finite_and_zero_on_self() -> None:
    rng = np.random.default_rng(2)
    st = feature_stats(rng.normal(size=(5, 20)))  # 5 samples in 20-d: rank 4 covariance
    assert frechet_distance(st, st) == pytest.approx(0.0, abs=1e-6)
    other = feature_stats(rng.normal(size=(5, 20)) + 3.0)
    d = frechet_distance(st, other)
    assert math.isfinite(d) and d > 20 * 9 * 0.5


def test_mmd_matches_naive_loop() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.5, size=(9, 3))
    bw = 1.3

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return math.exp(-float(((u - v) ** 2).sum()) / (2 * bw * bw))

    sxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    syy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    sxy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert mmd_rbf(x, y, bandwidth=bw) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-10)


def test_mmd_grows_with_shift() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 4))
    values = [mmd_rbf(x, rng.normal(loc=s, size=(60, 4))) for s in (0.0, 0.5, 2.0)]
    assert values[0] < values[1] < values[2]
    assert abs(values[0]) < 0.05


def test_measure_shift_and_bad_input() -> None:
    rng = np.random.default_rng(5)
    a, b = feature_stats(rng.normal(size=(30, 3))), feature_stats(rng.normal(1.0, size=(30, 3)))
    r = measure_shift(a, b)
    assert r.frechet > 1.0 and r.mmd > 0 and r.dim == 3 and r.n_target == 30
    with pytest.raises(UserError):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(UserError, match="dimensions"):
        frechet_distance(a, feature_stats(rng.normal(size=(30, 4))))


def test_stats_store_round_trip_and_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    key = feature_key_for("maskdino_tiny", None, ["res2", "res3"])
    other_key = feature_key_for("maskdino_tiny", "some-base", ["res2", "res3"])
    centres = {"near": 0.2, "mid": 1.0, "far": 3.0}
    for name, c in centres.items():
        record_domain_stats(tmp_path, name, feature_stats(rng.normal(c, size=(40, 3))), feature_key=key)
    # Same name under another extractor: must not be mixed in.
    record_domain_stats(
        tmp_path, "alien", feature_stats(rng.normal(0.0, size=(40, 3))), feature_key=other_key
    )
    # Re-recording replaces (one row per domain and key).
    st = feature_stats(rng.normal(3.0, size=(40, 3)), max_sample=16)
    record_domain_stats(tmp_path, "far", st, feature_key=key, source="test")
    rows = list_domain_stats(tmp_path, key)
    assert sorted(str(r["domain"]) for r in rows) == ["far", "mid", "near"]
    back = load_domain_stats(tmp_path, "far", key)
    np.testing.assert_array_equal(back.mean, st.mean)
    np.testing.assert_array_equal(back.cov, st.cov)
    assert back.sample.shape == (16, 3) and back.count == 40
    query = feature_stats(rng.normal(0.0, size=(40, 3)))
    nb = nearest_domains(tmp_path, query, 2, feature_key=key)
    assert [n.domain for n in nb] == ["near", "mid"]
    assert nb[0].distance < nb[1].distance
    assert [n.domain for n in nearest_domains(tmp_path, query, 5, feature_key=key, exclude=["near"])] == [
        "mid",
        "far",
    ]
    with pytest.raises(UserError):
        load_domain_stats(tmp_path, "missing", key)
