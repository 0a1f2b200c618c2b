"""Helpers of the cluster tests: sweep configs of cheap trials, reading the store and probes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.cluster.local import LocalCluster

import yaml

__all__ = ["HERE", "REPO", "Drivers", "sweep_config", "trials_table", "probes", "wait_for"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


class Drivers:
    """Starts `peftsweep` driver processes (each in its own session) and always ends them."""

    def __init__(self, cluster: LocalCluster, tmp: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
            "RAY_USAGE_STATS_ENABLED": "0",
            "WANDB_MODE": "offline",
        }

    def start(
        self,
        *args: str,
        log: str = "driver.log",
        address: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """``peftsweep <args> --address ADDRESS`` (default: the head's GCS address); ``env`` adds
        environment variables."""
        assert self.cluster.token_file is not None
        cmd = [
            sys.executable,
            "-m",
            "search.cli",
            *args,
            "--address",
            address or self.cluster.address,
            "--quiet",
            "--no-report",
        ]
        if args[0] == "launch":
            cmd += ["--token-file", str(self.cluster.token_file)]
        env = {**self.env(), **(env or {})}
        if args[0] == "resume":  # `resume` takes the token from the environment
            env.update(self.cluster.driver_env())
        with open(self.tmp / log, "ab") as fh:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float, log: str = "driver.log", address: str | None = None) -> None:
        proc = self.start(*args, log=log, address=address)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise AssertionError(f"driver timed out; log:\n{self.log_tail(log)}") from None
        assert rc == 0, f"driver exited {rc}; log:\n{self.log_tail(log)}"

    def log_tail(self, log: str = "driver.log") -> str:
        """The driver's log tail, plus the Ray Client server logs of the cluster (for failures)."""
        text = (self.tmp / log).read_text(errors="replace")[-4000:]
        for f in sorted(self.cluster.temp_dir.glob("session_*/logs/ray_client_server*.err")):
            tail = f.read_text(errors="replace")[-1500:]
            if tail.strip():
                text += f"\n--- {f.name}:\n{tail}"
        return text

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


def sweep_config(
    tmp: Path,
    *,
    trials: int,
    iterations: int,
    sleep: float,
    max_failures: int = 3,
    fail_on: str | None = None,
    concurrency: int = 4,
    gpus: float = 0.5,
) -> Path:
    """A sweep of cheap `cluster_trial` trials; each asks for 0.5 CPU + ``gpus`` GPU (0.5: 2 per worker)."""
    extra: dict[str, Any] = {"sleep": sleep, "probe_dir": str(tmp / "probe")}
    if fail_on:
        extra["fail_on"] = fail_on
    cfg = {
        "name": "clustertest",
        "domains": ["clean"],
        "space": {
            "methods": ["lora", "adapter"],
            "lora": {"rank": [2, 4, 8, 16]},
            "adapter": {"repetitions": [1, 2, 3], "reduction": [4]},
            "lr": {"low": 1e-4, "high": 3e-3},
            "iterations": [iterations],
        },
        "budget": {
            "trials": trials,
            "concurrency": concurrency,
            "cpus_per_trial": 0.5,
            "gpus_per_trial": gpus,
            "max_failures": max_failures,
        },
        "sampler": {"name": "random", "seed": 0},
        "early_stopping": {"enabled": False},
        "trial": {"function": "cluster_trial:prepare", "eval_every": 1, "extra": extra},
        "output_dir": str(tmp / "out"),
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def trials_table(tmp: Path) -> Any:
    from search.results.store import ResultStore

    return ResultStore(tmp / "out" / "results").trials()


def probes(tmp: Path, kind: str) -> list[dict[str, Any]]:
    """The trial factory's probe files (`starts` or `progress`), each with its trial_id."""
    out = []
    for f in sorted((tmp / "probe" / kind).glob("*.json")):
        try:
            payload = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        tid = f.stem.rsplit("-", 1)[0] if kind == "starts" else f.stem
        out.append({**payload, "trial_id": tid})
    return out


def wait_for(
    pred: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
