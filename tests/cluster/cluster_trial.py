"""A cheap trial factory for the cluster tests (the ``trial.function`` of their sweeps).

Follows the factory protocol of :mod:`search.engine.trainable`: ``prepare(params, context)`` returns an
object with ``costs`` and ``train_and_evaluate(report, start_iteration=0)``, plus
``save_state(dir)`` / ``load_state(dir) -> int`` so a retried trial continues from its checkpoint.

For the tests to see where and how trials ran it writes, under ``trial.extra.probe_dir``:
``starts/<trial_id>-<pid>.json`` once per attempt ({"node", "from"}: the node id and the
iteration it resumed from) and ``progress/<trial_id>.json`` after every reported iteration.
``extra.fail_on`` (a method name) makes those trials raise on every attempt.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["prepare", "ClusterTrial"]


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def _ids() -> tuple[str, str]:
    import ray
    from ray import tune

    return str(tune.get_context().get_trial_id()), str(ray.get_runtime_context().get_node_id())


class ClusterTrial:
    def __init__(self, params: dict[str, Any], context: Any) -> None:
        self.params = params
        self.extra = dict(context.trial.get("extra", {}))
        self.every = int(context.trial.get("eval_every", 1))
        rank = float(params.get("lora_rank") or 0) + 4.0 * float(params.get("adapter_repetitions") or 0)
        self.costs = {
            "trainable_params": int(1000 * rank),
            "total_params": 1_000_000,
            "trainable_pct": rank / 10.0,
            "latency_ms": 10.0 + rank / 8.0,
        }
        self.iteration = 0
        self.resumed_from = 0

    def save_state(self, d: str) -> None:
        Path(d, "cluster_trial.json").write_text(json.dumps({"iteration": self.iteration}))

    def load_state(self, d: str) -> int:
        self.resumed_from = int(json.loads(Path(d, "cluster_trial.json").read_text())["iteration"])
        return self.resumed_from

    def train_and_evaluate(
        self, report: Callable[[int, dict[str, Any]], None], start_iteration: int = 0
    ) -> dict[str, Any]:
        probe = Path(self.extra["probe_dir"])
        trial_id, node = _ids()
        _write(probe / "starts" / f"{trial_id}-{os.getpid()}.json", {"node": node, "from": start_iteration})
        if self.extra.get("fail_on") == self.params["method"]:
            raise RuntimeError(f"synthetic failure of a {self.params['method']} trial")
        n = int(self.params["iterations"])
        ap = 0.0
        for t in range(start_iteration + self.every, n + 1, self.every):
            time.sleep(float(self.extra.get("sleep", 0.0)))
            ap = 0.5 * t / n * (1.0 + self.costs["trainable_pct"] / 100.0)
            self.iteration = t
            report(t, {"iteration": t, "ap": ap, "loss": 1.0 - ap})
            _write(probe / "progress" / f"{trial_id}.json", {"node": node, "iteration": t})
        return {
            "status": "completed",
            "error": "",
            "ap": ap,
            "iterations": n,
            "final_loss": 1.0 - ap,
            "device": "cpu",
            "resumed_from": self.resumed_from,
        }


def prepare(params: dict[str, Any], context: Any) -> ClusterTrial:
    return ClusterTrial(params, context)
