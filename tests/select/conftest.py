"""Shared fixtures of the selection tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one thread for the test module, then restore.

    On a 2-core machine shared with other jobs, torch's default 2 intra-op threads spin against
    each other: the tiny backbone ran 8x slower (11 s vs 1.3 s for 6 x 48 images) when measured.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
