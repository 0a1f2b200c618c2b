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
