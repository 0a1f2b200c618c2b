"""A cheap, deterministic stand-in for ``models.trial`` used by the engine tests.

It follows the trial-factory protocol of :mod:`search.engine.trainable`: ``prepare(params, context)``
returns an object with ``costs`` (known before training) and ``train_and_evaluate(report)``.
AP rises as ``ap_max * (1 - exp(-t / 15))`` where ``ap_max`` grows with the adapted capacity;
``extra.fail_on`` (a method name) makes those trials raise, ``extra.sleep`` slows each step;
``extra.rendezvous`` (a folder) holds each trial at its start until another trial has started too
(at most ``extra.rendezvous_timeout`` seconds), so a test of concurrency does not depend on how
fast a loaded machine starts workers: a serial engine times out and shows a peak of one.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["prepare", "SyntheticPrepared", "costs_of", "ap_max_of"]


def costs_of(params: dict[str, Any]) -> dict[str, float]:
    m = params["method"]
    if m == "lora":
        pct = 0.1 * params["lora_rank"] / 2
        lat = 10.0
    elif m == "adapter":
        pct = 0.5 * params["adapter_repetitions"] * 4 / params["adapter_reduction"]
        lat = 10.0 + 1.5 * params["adapter_repetitions"]
    else:
        pct, lat = 20.0, 10.0
    total = 1_000_000
    return {
        "trainable_params": int(total * pct / 100),
        "total_params": total,
        "trainable_pct": pct,
        "latency_ms": lat,
    }


def ap_max_of(params: dict[str, Any]) -> float:
    c = costs_of(params)
    lr_term = -0.05 * (math.log10(params["lr"]) + 3) ** 2
    return 0.3 + 0.1 * math.log1p(c["trainable_pct"]) + lr_term


class SyntheticPrepared:
    def __init__(self, params: dict[str, Any], context: Any) -> None:
        self.params = params
        self.context = context
        self.costs = costs_of(params)
        self.extra = dict(context.trial.get("extra", {}))
        self.start = 0

    def save_state(self, d: str) -> None:
        Path(d, "synthetic.txt").write_text("ok")

    def train_and_evaluate(
        self, report: Callable[[int, dict[str, Any]], None], start_iteration: int = 0
    ) -> dict[str, Any]:
        if self.extra.get("fail_on") == self.params["method"]:
            raise RuntimeError("synthetic failure")
        if self.extra.get("rendezvous"):
            self._meet(Path(self.extra["rendezvous"]), float(self.extra.get("rendezvous_timeout", 60.0)))
        every = int(self.context.trial.get("eval_every", 10))
        n = int(self.params["iterations"])
        apm = ap_max_of(self.params)
        ap = 0.0
        log = self.extra.get("log_file")
        for t in range(every, n + 1, every):
            time.sleep(float(self.extra.get("sleep", 0.0)))
            ap = apm * (1 - math.exp(-t / 15))
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{os.getpid()} {self.params['lr']!r} {t}\n")
            report(t, {"iteration": t, "ap": ap, "loss": 1 - ap})
        return {
            "status": "completed",
            "error": "",
            "ap": ap,
            "ap50": min(1.0, ap * 1.5),
            "iterations": n,
            "final_loss": 1 - ap,
            "device": "cpu",
            "train_seconds": 0.0,
        }

    @staticmethod
    def _meet(folder: Path, timeout: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + timeout
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)


def prepare(params: dict[str, Any], context: Any) -> SyntheticPrepared:
    return SyntheticPrepared(params, context)
