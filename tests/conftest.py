"""Shared test setup: offline W&B, deterministic seeds, the `gpu` marker."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The suite's sweeps time latency with 1-2 passes on a loaded machine: they must not fill the user's
# latency profile (~/.cache/peftsweep) that real sweeps reuse. Set before any test starts a driver
# subprocess or Ray worker, which inherit it.
if "PEFTSWEEP_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["PEFTSWEEP_CACHE_DIR"] = tempfile.mkdtemp(prefix="peftsweep-test-cache-")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """CI machines have 2 cores shared with Ray workers: two torch threads per test only contend."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
