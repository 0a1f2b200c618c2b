"""The latency profile answers only with figures measured with at least the passes a sweep asks
for: a 1-pass figure (a test sweep, a quick look) never stands in for a sweep that times 10 passes,
and a better-measured figure replaces a weaker one in the sweep file and the user cache."""

from __future__ import annotations

import json
from pathlib import Path

from search.engine.latency_profile import LatencyProfile

KEY = "maskdino_tiny|classes=1|128px|cpu (x86_64, 1 threads)|base"


def _entry(ms: float, runs: int, warmup: int) -> dict[str, object]:
    return {
        "median_ms": ms,
        "p90_ms": ms,
        "device": "cpu",
        "image_size": [128, 128],
        "runs": runs,
        "warmup": warmup,
    }


def test_a_figure_with_fewer_passes_is_no_answer(tmp_path: Path) -> None:
    user = tmp_path / "user.json"
    user.write_text(json.dumps({KEY: _entry(65.3, runs=1, warmup=1)}))
    profile = LatencyProfile(sweep_file=tmp_path / "sweep.json", user_file=user)
    assert profile.get(KEY) is not None  # no protocol asked: any figure
    assert profile.get(KEY, runs=1, warmup=1)["median_ms"] == 65.3  # type: ignore[index]
    assert profile.get(KEY, runs=10, warmup=3) is None
    assert profile.get(KEY, runs=1, warmup=3) is None


def test_a_better_measured_figure_replaces_the_weaker_one_in_both_files(tmp_path: Path) -> None:
    user = tmp_path / "user.json"
    user.write_text(json.dumps({KEY: _entry(65.3, runs=1, warmup=1)}))
    profile = LatencyProfile(sweep_file=tmp_path / "sweep.json", user_file=user)
    profile.put(KEY, _entry(23.1, runs=10, warmup=3))
    assert profile.get(KEY, runs=10, warmup=3)["median_ms"] == 23.1  # type: ignore[index]
    for path in (user, tmp_path / "sweep.json"):
        assert json.loads(path.read_text())[KEY]["median_ms"] == 23.1
    # first measurement wins among equals, and a weaker one never overwrites
    profile.put(KEY, _entry(40.0, runs=10, warmup=3))
    profile.put(KEY, _entry(12.0, runs=2, warmup=0))
    assert json.loads(user.read_text())[KEY]["median_ms"] == 23.1
    assert LatencyProfile(user_file=user).get(KEY, runs=10, warmup=3)["median_ms"] == 23.1  # type: ignore[index]
