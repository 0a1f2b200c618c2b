"""`peftsweep run --quiet` in a fresh process that starts its own Ray (no Ray session from the test):
stderr holds nothing at all (no "Started a local Ray instance", no Tune banner, no Optuna line), and
stdout holds only the fronts the command promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def test_quiet_run_with_its_own_ray_prints_only_the_fronts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = {
        "name": "q",
        "domains": ["clean"],
        "space": {"methods": ["lora"], "lora": {"rank": [2, 4]}, "iterations": [10]},
        "budget": {"trials": 2, "concurrency": 1},
        "sampler": {"name": "random", "seed": 0},
        "early_stopping": {"enabled": False},
        "trial": {"function": "synthetic_trial:prepare", "eval_every": 5},
        "output_dir": str(out),
        "wandb": {"enabled": False, "mode": "offline"},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "run", str(tmp_path / "sweep.yaml"), "--quiet", "--no-report"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    # the fronts (one block per study) and the closing line are all there is
    assert proc.stdout.startswith("== domain clean: 2 non-dominated of 2 completed"), proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].endswith(f"-> {out}"), proc.stdout
    for noise in ("Ray", "Tune", "tensorboard", "Trial status", "study created", "[I "):
        assert noise not in proc.stdout, (noise, proc.stdout)
