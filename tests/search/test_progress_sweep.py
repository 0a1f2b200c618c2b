"""A sweep's progress: per-study rows (finished / running / pruned / infeasible / failed, the front so
far, ETA) as plain lines when the output is not a terminal; with quiet, nothing, Ray Tune's
banners included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search.config import SweepConfig, parse_config
from search.engine.runner import run_sweep
from search.results.status import sweep_status

pytestmark = pytest.mark.slow

BANNERS = ("View detailed results", "tensorboard", "Configuration for experiment", "Trial status")


def _config(out: Path) -> SweepConfig:
    return parse_config(
        {
            "name": "p",
            "domains": ["clean"],
            "space": {
                "methods": ["lora", "adapter"],
                "lora": {"rank": [2, 4, 8]},
                "adapter": {"repetitions": [1, 2, 3], "reduction": [4]},
                "iterations": [20],
            },
            # adapters x3 are 14.5 ms: infeasible, stopped before training
            "constraints": [{"metric": "latency_ms", "op": "<=", "value": 13.0}],
            "budget": {"trials": 4, "concurrency": 2},
            "sampler": {
                "name": "random",
                "seed": 0,
                "initial_points": [
                    {"method": "adapter", "adapter_repetitions": 3, "adapter_reduction": 4, "iterations": 20},
                ],
            },
            "early_stopping": {"enabled": False},
            "trial": {"function": "synthetic_trial:prepare", "eval_every": 10},
            "output_dir": str(out),
            "wandb": {"enabled": False, "mode": "offline"},
        }
    )


def test_quiet_sweep_prints_nothing(
    ray_session: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    res = run_sweep(_config(tmp_path / "q"), quiet=True, report=False)
    out, err = capfd.readouterr()
    assert len(res.trials) == 4
    assert out == "", out
    assert not any(b.lower() in err.lower() for b in BANNERS), err
    assert "[clean]" not in err and "study clean" not in err


def test_progress_lines_per_study(
    ray_session: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    res = run_sweep(_config(tmp_path / "p"), quiet=False, report=False)
    out, err = capfd.readouterr()
    assert not any(b.lower() in (out + err).lower() for b in BANNERS), out + err
    assert "\x1b[" not in err  # not a terminal: plain lines, no escape codes
    rows = [ln for ln in err.splitlines() if ln.startswith("study clean ")]
    assert rows, err
    # the last line (display closed at the sweep's end) matches what the store holds
    st = sweep_status(res.output_dir).studies[0]
    last = rows[-1]
    assert last.startswith("study clean 4/4 (100%)")
    m = re.search(r"(\d+) running, (\d+) completed, (\d+) pruned, (\d+) infeasible, (\d+) failed", last)
    assert m is not None, last
    assert [int(g) for g in m.groups()] == [
        st.counts[s] for s in ("running", "completed", "pruned", "infeasible", "failed")
    ]
    assert st.counts["infeasible"] == 1 and st.counts["running"] == 0
    assert f"front {len(st.front)} HV {st.hypervolume:.4g}" in last
