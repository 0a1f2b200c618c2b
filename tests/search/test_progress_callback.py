"""The progress callback sits in Tune's callback list (as Tune's reporter, to silence its banners):
no hook of Tune's callback interface may raise from it. Tune calls ``on_checkpoint`` before it
registers a trial's checkpoint and drops the checkpoint when a callback raises -- that is how every
retried trial once restarted from iteration 0."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune import Callback

from search.engine.progress import ProgressCallback

_HOOKS = sorted(n for n, _ in inspect.getmembers(Callback, inspect.isfunction) if n.startswith("on_"))


def _kwargs(hook: str) -> dict[str, Any]:
    trial = SimpleNamespace(config={"study": "clean"}, trial_id="t1", last_result={})
    pool: dict[str, Any] = {
        "iteration": 3,
        "trials": [trial],
        "trial": trial,
        "result": {"ap": 1.0, "iteration": 2},
        "checkpoint": object(),
        "failed": False,
        "error": False,
        "exception": None,
    }
    params = inspect.signature(getattr(Callback, hook)).parameters
    return {k: pool[k] for k in params if k in pool}


def test_the_hook_list_covers_the_checkpoint_hook() -> None:
    assert "on_checkpoint" in _HOOKS and "on_trial_recover" in _HOOKS


@pytest.mark.parametrize("hook", _HOOKS)
def test_no_tune_hook_raises(hook: str) -> None:
    cb = ProgressCallback("no-such-sweep", study="clean")  # nothing registered: shows nothing
    getattr(cb, hook)(**_kwargs(hook))
