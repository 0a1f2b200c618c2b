"""One local Ray session shared by the sweep tests of this folder (Ray start-up costs ~5-10 s).

Ray workers import the synthetic trial function (tests/search/synthetic_trial.py) by name, so
this folder goes on PYTHONPATH before Ray starts (workers inherit the environment)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([old] if old else [])])
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A local S3-compatible server (moto) on loopback with a bucket ``sweeps``; yields the
    ``pyarrow.fs`` query string that points an ``s3://sweeps/...`` URI at it."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(k, v)
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(
        Bucket="sweeps"
    )
    try:
        yield f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    finally:
        srv.stop()
        mp.undo()
