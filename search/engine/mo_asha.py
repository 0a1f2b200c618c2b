"""MO-ASHA: asynchronous successive halving that promotes on non-dominated rank.

Rungs sit at ``grace * eta**k`` (k = 0, 1, ...) of the trial's ``time_attr`` (our trainable's
``iteration``), below ``max_t``. The first time a trial's report reaches a rung, its objective
vector (e.g. intermediate AP, trainable_pct, latency_ms; converted to minimisation) is recorded
at that rung. The trial continues only if fewer than ``ceil(n / eta)`` of the ``n`` vectors
recorded at the rung are *better* than its own, where better means a lower non-dominated rank,
or the same rank and a larger NSGA-II crowding distance (ties favour the trial being decided,
like ASHA's ``>= cutoff``). So a trial is never stopped while it is non-dominated and unique in
crowding, and dominated trials are stopped once enough trials reached the rung.

Decisions are asynchronous (no waiting for a rung to fill), as in ASHA. Final results
(``final=True``) are never judged. The rung records persist to ``state_path`` (JSON) when
given, so a restored sweep keeps them (Tune does not checkpoint schedulers).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.results.pareto import crowding_distance, non_dominated_ranks, to_min

__all__ = ["MOASHAScheduler", "rung_levels", "promote"]


def rung_levels(grace: int, eta: float, max_t: int) -> list[int]:
    """Rung iterations ``grace * eta**k`` strictly below ``max_t`` (deduplicated, ascending)."""
    out: list[int] = []
    k = 0
    while True:
        r = int(round(grace * eta**k))
        if r >= max_t:
            break
        if not out or r > out[-1]:
            out.append(r)
        k += 1
    return out


def promote(vectors: np.ndarray, index: int, eta: float) -> bool:
    """Decision for row ``index`` of the minimisation matrix ``vectors`` (rule in module docstring)."""
    n = vectors.shape[0]
    ranks = non_dominated_ranks(vectors)
    crowd = np.zeros(n)
    for r in np.unique(ranks):
        idx = np.where(ranks == r)[0]
        crowd[idx] = crowding_distance(vectors[idx])
    mine_r, mine_c = ranks[index], crowd[index]
    better = int(np.sum((ranks < mine_r) | ((ranks == mine_r) & (crowd > mine_c))))
    keep = max(1, math.ceil(n / eta))
    return better < keep


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective ASHA (see module docstring). ``metrics``/``modes`` as the searcher's."""

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        *,
        time_attr: str = "iteration",
        grace: int = 10,
        eta: float = 2.0,
        max_t: int = 100,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if len(metrics) != len(modes) or not metrics:
            raise ValueError("metrics and modes must be non-empty and the same length")
        self.metrics = list(metrics)
        self.modes = list(modes)
        self.time_attr = time_attr
        self.eta = float(eta)
        self.rungs = rung_levels(grace, eta, max_t)
        self.state_path = str(state_path) if state_path else None
        # rung -> trial_id -> objective vector (original units)
        self.records: dict[int, dict[str, list[float]]] = {r: {} for r in self.rungs}
        self.stopped: dict[str, int] = {}
        self._loaded = False

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # Objectives come from the constructor; Tune's single metric (if any) is irrelevant here.
        return True

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.state_path and Path(self.state_path).exists():
            data = json.loads(Path(self.state_path).read_text())
            for r, recs in data.get("records", {}).items():
                self.records.setdefault(int(r), {}).update(recs)
            self.stopped.update(data.get("stopped", {}))

    def _save(self) -> None:
        if not self.state_path:
            return
        p = Path(self.state_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
        tmp.write_text(
            json.dumps({"records": {str(k): v for k, v in self.records.items()}, "stopped": self.stopped})
        )
        os.replace(tmp, p)

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for one result (pure bookkeeping; also used by tests without Tune)."""
        self._load()
        if result.get("final") is True or trial_id in self.stopped:
            return TrialScheduler.CONTINUE if trial_id not in self.stopped else TrialScheduler.STOP
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        try:
            vec = [float(result[m]) for m in self.metrics]
        except (KeyError, TypeError, ValueError):
            return TrialScheduler.CONTINUE
        if not all(math.isfinite(v) for v in vec):
            return TrialScheduler.CONTINUE
        decision = TrialScheduler.CONTINUE
        changed = False
        for rung in self.rungs:
            if t < rung:
                break
            recs = self.records.setdefault(rung, {})
            if trial_id in recs:
                continue
            recs[trial_id] = vec
            changed = True
            ids = list(recs)
            mat = to_min(np.array([recs[i] for i in ids]), self.modes)
            if not promote(mat, ids.index(trial_id), self.eta):
                self.stopped[trial_id] = rung
                decision = TrialScheduler.STOP
                break
        if changed:
            self._save()
        return decision

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return self.decide(trial.trial_id, result)

    def debug_string(self) -> str:
        return f"MO-ASHA on {self.metrics} rungs={self.rungs} eta={self.eta} stopped={len(self.stopped)}"
