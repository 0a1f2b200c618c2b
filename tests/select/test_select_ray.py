"""`peftsweep select --address`: pilot trials of a rung run in parallel on a Ray cluster, and the
selection is the one the same pilot makes in this process.

The cluster is a real local one (``search.cluster.local.LocalCluster``: ``ray start --head`` on a
loopback address, token auth, 2 CPUs, no worker nodes); the trials are real ``models.trial``
trials (tiny Mask DINO, synthetic COCO set), run once in this process and once as Ray tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.data.coco import write_synthetic_coco
from search.cli import main

MiB = 1024**2

TINY = [
    "--iterations", "4", "--rungs", "3", "--image-size", "64", "--num-train-images", "3",
    "--num-eval-images", "2", "--batch-size", "1", "--shift-images", "6", "--latency-runs", "1",
    "--device", "cpu", "--seed", "0", "--min-ap-fraction", "0.5", "--accept-untrained", "--json",
    "--seeds", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local Ray head with 2 CPUs (two pilot trials at once), stopped at the end."""
    from search.cluster.local import LocalCluster, NodeSpec

    c = LocalCluster(
        workers=0,
        head=NodeSpec(num_cpus=2, num_gpus=0, memory=3072 * MiB, object_store_memory=96 * MiB),
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _select(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc = main(["select", *args, *TINY])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return dict(json.loads(captured.out))


def _overlap(rows: list[dict[str, Any]]) -> int:
    """Most trials running at the same moment (from their start/finish times)."""
    events = sorted(
        [(float(r["started_at"]), 1) for r in rows] + [(float(r["finished_at"]), -1) for r in rows]
    )
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_address_runs_rungs_in_parallel_and_picks_the_same(
    tmp_path: Path, cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    import ray

    # Another test module's Ray may still be up in this process: --address must reach the cluster
    # (select refuses to run on a different Ray than the one named), so start from none.
    if ray.is_initialized():
        ray.shutdown()
    auth_before = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    data = write_synthetic_coco("clean", tmp_path / "clean", 6, seed=3, image_size=64)
    common = ["--data", str(data), "--images", str(data.parent / "images")]
    here = _select([*common, "--out", str(tmp_path / "here")], capsys)
    on_ray = _select(
        [*common, "--out", str(tmp_path / "ray"), "--address", cluster.address,
         "--token-file", str(cluster.token_file), "--cpus-per-trial", "1"],
        capsys,
    )  # fmt: skip

    # Parallel: the trials ran in Ray worker processes (not this one); the last rung's two
    # finalists, on a 2-CPU cluster, ran at the same time in two workers.
    assert len(on_ray["pilot"]) == 5  # one row per candidate (its furthest rung)
    # The cluster's token applied only while select was connected: a local Ray started later in
    # this process must not be handed it (its GCS would refuse the driver).
    assert {k: os.environ.get(k) for k in auth_before} == auth_before
    assert all(int(r["worker_pid"]) != os.getpid() for r in on_ray["pilot"])
    assert all(int(r["worker_pid"]) == os.getpid() for r in here["pilot"])
    finalists = [r for r in on_ray["pilot"] if r["finalist"]]
    assert len(finalists) == 2 and any(not r["finalist"] for r in on_ray["pilot"])
    assert len({r["worker_pid"] for r in finalists}) == 2
    assert _overlap(finalists) == 2, "the last rung's two trials did not overlap on a 2-CPU cluster"
    # The same pilot: same candidates, same furthest rung, same numbers (same seeds, exact resume).
    key = lambda r: r["config_json"]  # noqa: E731
    a = sorted(here["pilot"], key=key)
    b = sorted(on_ray["pilot"], key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    for x, y in zip(a, b):
        assert x["rung_iterations"] == y["rung_iterations"] and x["finalist"] == y["finalist"]
        assert x["status"] == y["status"] == "completed"
        assert x["ap"] == pytest.approx(y["ap"], abs=1e-9)
        assert x["final_loss"] == pytest.approx(y["final_loss"], rel=1e-5)
        assert x["trainable_params"] == y["trainable_params"]
    # ... and the same pick.
    assert here["decision"]["chosen"] is not None
    assert here["decision"]["chosen"]["label"] == on_ray["decision"]["chosen"]["label"]
    assert here["compute_iterations"] == on_ray["compute_iterations"]
