"""The real trial factory (:func:`search.engine.model_trial.prepare`, the tiny real model) with a
probe for the kill tests: every report appends ``pid start_iteration iteration`` to the file named
by ``PEFTSWEEP_PROBE_FILE`` (workers inherit the driver's environment), and a first attempt (start
iteration 0) pauses ``PEFTSWEEP_PROBE_PAUSE_S`` seconds after the report at
``PEFTSWEEP_PROBE_PAUSE_AT`` -- after its checkpoint was written -- so a test can kill it there."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["prepare", "ProbedTrial"]


class ProbedTrial:
    """Forwards the resume protocol (save_state / load_state / start_iteration) to the real trial."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.costs = inner.costs

    def save_state(self, directory: str) -> None:
        self.inner.save_state(directory)

    def load_state(self, directory: str) -> int:
        return int(self.inner.load_state(directory))

    def train_and_evaluate(self, report: Callable[[int, dict[str, Any]], None], **kwargs: Any) -> Any:
        path = os.environ["PEFTSWEEP_PROBE_FILE"]
        start = int(kwargs.get("start_iteration", 0) or 0)
        pause_at = int(os.environ.get("PEFTSWEEP_PROBE_PAUSE_AT", "0"))

        def probed(iteration: int, metrics: dict[str, Any]) -> None:
            report(iteration, metrics)  # the checkpoint of this iteration is written here
            with open(path, "a") as fh:
                fh.write(f"{os.getpid()} {start} {iteration}\n")
            if start == 0 and iteration == pause_at:
                time.sleep(float(os.environ.get("PEFTSWEEP_PROBE_PAUSE_S", "0")))

        return self.inner.train_and_evaluate(probed, **kwargs)


def prepare(params: dict[str, Any], context: Any) -> ProbedTrial:
    from search.engine.model_trial import prepare as real_prepare

    return ProbedTrial(real_prepare(params, context))
