"""cluster/local_cluster.py start / status / stop with real Ray processes, and its secure defaults."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from search.cluster.local import LocalCluster

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "local_cluster.py"
MiB = 1024**2

PROBE = """
import json, ray
ray.init(address="{address}", logging_level="error")
print("NODES=" + json.dumps([n["Resources"] for n in ray.nodes() if n["Alive"]]))
"""


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
    )


def test_start_status_stop(tmp_path: Path):
    root = tmp_path / "c"
    started = _run(
        str(SCRIPT),
        "start",
        "--workers",
        "1",
        "--root",
        str(root),
        "--cpus-per-worker",
        "1",
        "--gpus-per-worker",
        "2",
        "--memory-per-worker",
        "700MiB",
        "--object-store-per-worker",
        "90MiB",
        "--head-memory",
        "600MiB",
    )
    cluster = LocalCluster.from_state(root) if (root / "cluster.json").exists() else None
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        assert exports["RAY_AUTH_MODE"] == "token" and exports["PEFTSWEEP_CLUSTER_ROOT"] == str(root)
        token = Path(exports["RAY_AUTH_TOKEN_PATH"])
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
        assert exports["RAY_ADDRESS"].startswith("127.")  # nodes advertise a loopback address

        status = _run(str(SCRIPT), "status", "--root", str(root))
        assert status.returncode == 0 and [ln.split("\t")[:2] for ln in status.stdout.splitlines()[:2]] == [
            ["head", "up"],
            ["worker1", "up"],
        ]

        # A driver with the token sees both nodes with the figures each was started with.
        probe = _run(
            "-c",
            PROBE.format(address=exports["RAY_ADDRESS"]),
            env={k: exports[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")},
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        nodes = json.loads(probe.stdout.split("NODES=", 1)[1])
        by_name = {("head" if "head" in r else "worker1"): r for r in nodes}
        assert by_name["head"]["memory"] == 600 * MiB and "GPU" not in by_name["head"]
        assert by_name["worker1"]["GPU"] == 2 and by_name["worker1"]["CPU"] == 1
        assert by_name["worker1"]["memory"] == 700 * MiB
        assert by_name["worker1"]["object_store_memory"] == 90 * MiB

        # Without the token the cluster refuses the driver.
        refused = _run(
            "-c",
            PROBE.format(address=exports["RAY_ADDRESS"]),
            env={
                "RAY_AUTH_MODE": "disabled",
                "RAY_AUTH_TOKEN_PATH": "",
                "RAY_AUTH_TOKEN": "",
                "RAY_NUM_REDIS_GET_RETRIES": "2",
            },
        )
        assert refused.returncode != 0 and "NODES=" not in refused.stdout
        assert "auth" in refused.stderr.lower()

        stopped = _run(str(SCRIPT), "stop", "--root", str(root))
        assert stopped.returncode == 0, stopped.stderr
        assert cluster is not None and all(not n.processes() for n in cluster.nodes)
        assert not (root / "cluster.json").exists()
    finally:
        if cluster is not None:
            cluster.stop()


def test_stop_of_unknown_root_is_a_user_error(tmp_path: Path):
    res = _run(str(SCRIPT), "stop", "--root", str(tmp_path))
    assert res.returncode == 2 and "no local cluster state" in res.stderr
