"""Real trials resume (the tiny real model): a worker killed mid-trial, and separately a driver killed
mid-trial, continue from the trial's last checkpoint -- the row records a start iteration > 0, the
continued attempt runs only the remaining iterations, and the final AP and loss equal those of an
uninterrupted run of the same spec (same seed, deterministic CPU, one thread)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import yaml

from search.results.store import ResultStore

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from driver_procs import kill_tree  # noqa: E402

ROOT = HERE.parent.parent

pytestmark = pytest.mark.slow

ITERATIONS, EVERY, PAUSE_AT = 6, 2, 2
EXTRA: dict[str, Any] = {
    "image_size": 64,
    "num_train_images": 4,
    "num_eval_images": 2,
    "batch_size": 2,
    "latency_warmup": 0,
    "latency_runs": 1,
    "threads": 1,
    "device": "cpu",
}


def _config(out: Path) -> dict[str, Any]:
    return {
        "name": "realresume",
        "model": {"name": "maskdino_tiny"},
        "domains": ["clean"],
        "space": {
            "methods": ["lora"],
            "lora": {"rank": [2], "alpha": [8.0]},
            "lr_grid": [2e-3],
            "iterations": [ITERATIONS],
        },
        "objectives": [{"name": "ap", "mode": "max", "ref": 0.0}],
        "budget": {"trials": 1, "concurrency": 1, "cpus_per_trial": 1, "max_failures": 2},
        "sampler": {"name": "random", "seed": 0},
        "early_stopping": {"enabled": False},
        "trial": {"function": "real_trial_probe:prepare", "eval_every": EVERY, "seed": 3, "extra": EXTRA},
        "output_dir": str(out),
    }


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
            "PEFTSWEEP_PROBE_FILE": str(tmp / "probe.log"),
            "PEFTSWEEP_PROBE_PAUSE_AT": str(PAUSE_AT),
            "PEFTSWEEP_PROBE_PAUSE_S": "600",  # the first attempt waits here to be killed
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


def _probe(tmp: Path) -> list[tuple[int, int, int]]:
    path = tmp / "probe.log"
    if not path.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines() if line.strip()]  # type: ignore[misc]


def _wait_paused(tmp: Path, store: ResultStore, driver: subprocess.Popen[bytes], timeout: float) -> int:
    """The pid of the first attempt once it paused after its checkpoint at PAUSE_AT and the driver
    has recorded that report (so Tune knows the checkpoint)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert driver.poll() is None, "driver ended before the kill"
        paused = [pid for pid, start, it in _probe(tmp) if start == 0 and it == PAUSE_AT]
        if paused and store.exists():
            inter = store.intermediate()
            if len(inter) and (inter["iteration"] == PAUSE_AT).any():
                return paused[0]
        time.sleep(0.5)
    raise AssertionError(f"the trial did not reach iteration {PAUSE_AT} in time: {_probe(tmp)}")


def _uninterrupted(out: Path) -> dict[str, Any]:
    """The same trial run in one go, in this process (the spec the sweep's factory built)."""
    import torch

    from search.config import load_config
    from search.engine.model_trial import spec_dict

    config = load_config(out / "sweep.yaml")
    context = SimpleNamespace(
        domain=config.domains[0].model_dump(),
        model=config.model.model_dump(),
        trial=config.trial.model_dump(),
    )
    row = ResultStore(out / "results").trials().iloc[0]
    params = json.loads(row["config_json"])  # the sampled parameters, as the trial got them
    from models.trial import run_trial

    threads = torch.get_num_threads()
    try:
        return run_trial(spec_dict(params, context)).to_dict()
    finally:
        torch.set_num_threads(threads)


def _check_resumed(tmp: Path, out: Path, first_pid: int) -> None:
    df = ResultStore(out / "results").trials()
    assert len(df) == 1, df
    row = df.iloc[0]
    assert row["status"] == "completed", row.to_dict()
    assert row["start_iteration"] == PAUSE_AT and row["iterations_done"] == ITERATIONS
    # the continued attempt ran only the remaining iterations
    later = [(start, it) for pid, start, it in _probe(tmp) if pid != first_pid]
    assert later == [(PAUSE_AT, it) for it in range(PAUSE_AT + EVERY, ITERATIONS + 1, EVERY)], _probe(tmp)
    ref = _uninterrupted(out)
    assert ref["status"] == "completed" and ref["start_iteration"] == 0
    assert math.isfinite(ref["final_loss"])
    # bit for bit (one thread, deterministic CPU kernels): the loss history is the strong check, the
    # AP of a few iterations from a random base is small
    assert row["final_loss"] == ref["final_loss"]
    assert row["ap"] == ref["ap"] and row["ap50"] == ref["ap50"]


def test_worker_killed_mid_trial_continues_from_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(_config(out)))
    driver = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(tmp_path / "sweep.yaml"), "--no-report", "--quiet"],
        cwd=ROOT,
        env=_env(tmp_path),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "driver.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    store = ResultStore(out / "results")
    try:
        pid = _wait_paused(tmp_path, store, driver, timeout=240)
        os.kill(pid, signal.SIGKILL)  # the Ray worker running the trial
        assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    _check_resumed(tmp_path, out, pid)


def test_driver_killed_mid_trial_resumes_from_the_trial_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(_config(out)))
    env = _env(tmp_path)
    driver = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(tmp_path / "sweep.yaml"), "--no-report", "--quiet"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "driver.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    store = ResultStore(out / "results")
    try:
        pid = _wait_paused(tmp_path, store, driver, timeout=240)
    finally:
        kill_tree(driver)  # the driver and everything it started, the paused worker included
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    res = subprocess.run(
        [sys.executable, "-m", "search.cli", "resume", str(out), "--no-report", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    _check_resumed(tmp_path, out, pid)
