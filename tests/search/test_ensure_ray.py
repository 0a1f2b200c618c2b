"""A process already connected to Ray keeps its connection, and is not silently pointed elsewhere."""

from __future__ import annotations

import pytest

from models.errors import UserError
from search.engine.runner import ensure_ray


def test_an_existing_connection_is_kept_and_another_address_refused(ray_session: None) -> None:
    import ray

    here = ray.get_runtime_context().gcs_address
    assert ensure_ray() is False and ensure_ray(here) is False  # reused; the caller must not shut it down
    with pytest.raises(UserError, match=r"--address 127\.0\.0\.1:1: this process is already connected"):
        ensure_ray("127.0.0.1:1")
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == here
