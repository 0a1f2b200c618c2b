"""The trials' side of the latency profile: a sweep's latency figures, shared with its trials.

Trials never time themselves while other trials train beside them. The driver measures each
deployed architecture once, in isolation, on the sweep's target device
(:mod:`search.engine.latency_profile`), and puts the figure into a named Ray actor per sweep
(:class:`LatencyCacheActor`, no CPU reserved). Each trial asks it through a
:class:`SweepLatencyCache` (a picklable client: the actor's name), the ``models.latency.LatencyCache``
that ``models.trial.prepare_trial`` takes (key: model, class count, input size, device name,
architecture). The actor answers for the *target* device whatever device the trial runs on (it
rewrites the key's device field), so trials on a mixed cluster all report the target's figure.
The entries are saved to ``OUT/state/latency.json`` after every domain and loaded on ``resume``.
A key the driver has not measured (a trial run outside the gate) is measured by the trial and
put here (put-if-absent), as before the profile existed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from search.engine.latency_profile import with_device

__all__ = ["LatencyCacheActor", "SweepLatencyCache", "start_latency_cache", "save_latency_cache"]


@ray.remote(num_cpus=0)
class LatencyCacheActor:
    """key -> latency record (``models.latency.LatencyResult.to_dict()``); put-if-absent.
    ``device``: the target device's name every key is answered for ("" keeps keys as given)."""

    def __init__(self, entries: dict[str, dict[str, Any]], device: str = "") -> None:
        self.device = device
        # Only the target's own figures: another device's entry must not answer for the target.
        self.entries = {k: v for k, v in entries.items() if not device or with_device(k, device) == k}

    def _key(self, key: str) -> str:
        return with_device(key, self.device) if self.device else key

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(self._key(key))

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return self.entries.setdefault(self._key(key), value)

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


def start_latency_cache(
    sweep_id: str, path: Path, *, device: str = "", entries: Mapping[str, dict[str, Any]] | None = None
) -> Any:
    """Start the sweep's cache actor (driver side), seeded from ``path`` when it exists (resume) and
    from ``entries`` (the latency profile); ``device``: the target device's name."""
    seed = {**dict(entries or {}), **(json.loads(path.read_text()) if path.exists() else {})}
    return LatencyCacheActor.options(  # type: ignore[attr-defined]
        name=_actor_name(sweep_id), get_if_exists=True
    ).remote(seed, device)


def save_latency_cache(actor: Any, path: Path) -> None:
    """Write the actor's entries to ``path`` atomically."""
    from models.data.coco import atomic_write_json

    atomic_write_json(path, ray.get(actor.all.remote()))
