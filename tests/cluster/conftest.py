"""A real local Ray cluster (head + 2 worker nodes, separate process trees) for the cluster tests.

One cluster serves the whole folder (starting one costs 10-50 s on 2 busy cores); the test that
kills a node gives the cluster a fresh worker before it ends. Everything started here is stopped
by the fixture finalizers: the cluster's node sessions and every driver's process group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The test modules import cluster_helpers; the Ray workers import cluster_trial (via PYTHONPATH).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_helpers import HERE, REPO, Drivers  # noqa: E402

from search.cluster.local import LocalCluster, NodeSpec  # noqa: E402

MiB = 1024**2


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """Head: 1 CPU, no GPU (like a cloud head node). Workers: 1 CPU + 1 logical GPU each."""
    worker = NodeSpec(num_cpus=1, num_gpus=1, memory=1536 * MiB, object_store_memory=96 * MiB)
    c = LocalCluster(
        workers=[worker, worker],
        head=NodeSpec(num_cpus=1, num_gpus=0, memory=1024 * MiB, object_store_memory=96 * MiB),
        env={"PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])},
        client_port=0,  # a Ray Client server (ray://) too
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def drivers(cluster: LocalCluster, tmp_path: Path) -> Iterator[Drivers]:
    d = Drivers(cluster, tmp_path)
    try:
        yield d
    finally:
        d.stop_all()
