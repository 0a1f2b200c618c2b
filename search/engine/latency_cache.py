"""One latency measurement per deployed architecture and device, shared by a sweep's trials.

Trials measure latency before training, often while other trials train on the same machine, so two
trials deploying the same network (merged LoRA of any rank and the head baselines run the base
network's computation) would otherwise report different latencies and split the Pareto front on
timing noise. With ``trial.latency_per_architecture: true`` the driver starts a named Ray
actor per sweep (:class:`LatencyCacheActor`, no CPU reserved); each trial asks it through a
:class:`SweepLatencyCache` (a picklable client: the actor's name) and only the first trial of an
architecture measures (key: model, class count, input size, device name, architecture; see
``models.trial.prepare_trial``). The entries are saved to ``OUT/state/latency.json`` after every
domain and loaded again on ``resume``. One measurement stands for every trial of an architecture,
so it suits trials that own their device; on shared CPUs it is off by default (see
``search.config.TrialSettings``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

__all__ = ["LatencyCacheActor", "SweepLatencyCache", "start_latency_cache", "save_latency_cache"]


@ray.remote(num_cpus=0)
class LatencyCacheActor:
    """key -> latency record (``models.latency.LatencyResult.to_dict()``); put-if-absent."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = dict(entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return self.entries.setdefault(key, value)

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.entries)


def _actor_name(sweep_id: str) -> str:
    return f"peftsweep-latency-{sweep_id}"


class SweepLatencyCache:
    """Client of a sweep's cache actor (``models.latency.LatencyCache``); holds only the name, so it
    travels to trials on any node. ``get`` finds nothing when the actor is not running."""

    def __init__(self, sweep_id: str) -> None:
        self.name = _actor_name(sweep_id)

    def _actor(self) -> Any:
        try:
            return ray.get_actor(self.name)
        except ValueError:  # not running (e.g. a trial prepared outside a sweep)
            return None

    def get(self, key: str) -> dict[str, Any] | None:
        actor = self._actor()
        return None if actor is None else ray.get(actor.get.remote(key))

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        actor = self._actor()
        return value if actor is None else dict(ray.get(actor.put.remote(key, value)))


def start_latency_cache(sweep_id: str, path: Path) -> Any:
    """Start the sweep's cache actor (driver side), seeded from ``path`` when it exists (resume)."""
    entries = json.loads(path.read_text()) if path.exists() else {}
    return LatencyCacheActor.options(  # type: ignore[attr-defined]
        name=_actor_name(sweep_id), get_if_exists=True
    ).remote(entries)


def save_latency_cache(actor: Any, path: Path) -> None:
    """Write the actor's entries to ``path`` atomically."""
    from models.data.coco import atomic_write_json

    atomic_write_json(path, ray.get(actor.all.remote()))
