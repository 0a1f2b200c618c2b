"""The latency profile: one latency per deployed architecture, measured in isolation on a named device.

Latency depends only on the deployed architecture (:func:`models.latency.deployed_architecture`:
the base network's computation for merged LoRA of any rank and the head baselines; each adapter
depth / placement / residual / reduction its own), the model and its class count, the input size
and the target device. A sweep's trials therefore never measure latency themselves while other
trials train beside them (the same architecture read 30.5 and 61.4 ms that way); instead:

- **One figure per key** ``model|classes=N|SIZEpx|DEVICE|ARCHITECTURE`` (the key
  ``models.trial.prepare_trial`` asks its latency cache for, with DEVICE the *target* device's
  name, so a trial on any GPU type of a mixed cluster gets the target's figure).
- **Measured in isolation.** A Ray task that holds the whole target device while it measures:
  every CPU of the node for a CPU target (torch then uses the trial's thread count, as deployed),
  a whole GPU for a GPU target. Tune starts no trial while the searcher waits for a measurement
  (:class:`search.engine.samplers.TruthfulOptunaSearch` returns no config meanwhile), and the task
  only starts once running trials have released the device, so nothing trains on it meanwhile.
  It builds through ``models.trial.prepare_trial`` (the path a trial takes: base checkpoint
  loaded, method applied, LoRA merged) and times up to :data:`INTERLEAVE` architectures
  round-robin (``latency_warmup`` + ``latency_runs`` passes each, median), so load from outside
  the sweep that drifts meanwhile hits them alike. Isolation covers the sweep's own trials (Ray
  resources); other processes on a shared machine still add noise (search/benchmarks/latency_profile_cpu.txt).
- **On a named target device.** ``trial.latency_device``: empty for the driver's node (its GPU when
  trials use GPUs, else its CPU), or the name of a Ray custom resource that one node offers (e.g.
  ``latency_a100: 1`` in its ``ray start --resources``). A name no node offers is a UserError.
- **Cached** in the output folder (``OUT/state/latency_profile.json``) and in a user-level cache
  (``$PEFTSWEEP_CACHE_DIR`` or ``~/.cache/peftsweep``, ``latency_profile.json``) that later sweeps
  reuse; both written atomically (read, merge, replace: concurrent sweeps lose no entry they wrote
  before the merge).
- **Lazily:** the architectures of the space are measured in one isolated task before the first
  trial (nothing trains yet, so no trial waits); anything that appears later (an initial point
  outside the space) is measured when the sampler first proposes it.
- After the sweep, :func:`remeasure` times the final fronts' members again, in isolation, for the
  report (``OUT/latency_check.json``: profile figure, re-measured figure, relative difference).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UserError

__all__ = [
    "LatencyTarget",
    "LatencyProfile",
    "LatencyPending",
    "ProfiledLatency",
    "profile_key",
    "user_cache_file",
    "resolve_target",
    "measure_specs",
]

logger = logging.getLogger(__name__)
PROFILE_FILE = "latency_profile.json"


class LatencyPending(Exception):
    """A measurement the caller needs is in flight: ask again later (the searcher returns no config)."""


def profile_key(model: str, num_classes: int, image_size: int, device: str, architecture: str) -> str:
    """The cache key (the same layout ``models.trial.prepare_trial`` builds for its latency cache)."""
    return f"{model}|classes={num_classes}|{image_size}px|{device}|{architecture}"


def with_device(key: str, device: str) -> str:
    """``key`` with its device field replaced (a trial's own device -> the sweep's target device)."""
    parts = key.split("|", 4)
    if len(parts) != 5:
        return key
    parts[3] = device
    return "|".join(parts)


def user_cache_file() -> Path:
    root = os.environ.get("PEFTSWEEP_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "peftsweep"
    )
    return Path(root) / PROFILE_FILE


def _read(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("%s: unreadable latency profile, ignored", path)
        return {}
    return {str(k): dict(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _protocol(entry: Mapping[str, Any]) -> tuple[int, int]:
    """(timed passes, warm-up passes) an entry was measured with."""
    return int(entry.get("runs") or 0), int(entry.get("warmup") or 0)


def _weaker(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` was measured with more timed or warm-up passes than ``old``."""
    (r0, w0), (r1, w1) = _protocol(old), _protocol(new)
    return r1 > r0 or w1 > w0


def _merge_write(path: Path, entries: Mapping[str, dict[str, Any]]) -> None:
    """Add ``entries`` to the file at ``path``: an existing key is kept (first measurement wins)
    unless the new entry was measured with more passes."""
    from models.data.coco import atomic_write_json

    merged = _read(path)
    for key, entry in entries.items():
        if key not in merged or _weaker(merged[key], entry):
            merged[key] = dict(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, merged)


@dataclass
class LatencyProfile:
    """key -> ``models.latency.LatencyResult.to_dict()``, backed by the sweep file and the user cache.

    ``get`` looks in memory, then the sweep file's entries, then the user cache (loaded once),
    and answers only with an entry measured with at least the passes asked for: a figure from a
    1-pass test sweep is no answer for a sweep that times 10. ``put`` is put-if-absent (or
    replaces a figure measured with fewer passes) and writes both files."""

    sweep_file: Path | None = None
    user_file: Path | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entries = {**_read(self.user_file), **_read(self.sweep_file), **self.entries}

    def get(self, key: str, runs: int = 0, warmup: int = 0) -> dict[str, Any] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        done_runs, done_warmup = _protocol(hit)
        return hit if done_runs >= runs and done_warmup >= warmup else None

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        if key not in self.entries or _weaker(self.entries[key], value):
            self.entries[key] = dict(value)
            for path in (self.sweep_file, self.user_file):
                if path is not None:
                    try:
                        _merge_write(path, {key: self.entries[key]})
                    except OSError as exc:  # a read-only home must not stop a sweep
                        logger.warning("%s: latency profile not written (%s)", path, exc)
        return self.entries[key]

    def save_sweep_copy(self, keys: Sequence[str]) -> None:
        """Copy the entries a sweep used into its own file (user-cache hits included)."""
        if self.sweep_file is not None:
            _merge_write(self.sweep_file, {k: self.entries[k] for k in keys if k in self.entries})


@dataclass(frozen=True)
class LatencyTarget:
    """Where latency is measured: ``resource`` (a Ray custom resource one node offers) or the
    driver's node; ``gpu`` when the target is a GPU; ``threads`` a deployed CPU model's threads."""

    resource: str = ""
    gpu: bool = False
    threads: int = 1
    node_id: str = ""  # the node that offers ``resource`` (or the driver's), resolved at start
    node_cpus: float = 1.0

    def options(self) -> dict[str, Any]:
        """Ray task options that hold the whole target device (isolation)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts: dict[str, Any] = {"num_cpus": self.node_cpus, "max_retries": 1}
        if self.gpu:
            # A whole GPU: no trial (fractional GPUs included) shares it meanwhile. CPUs: one, the
            # trials on the node's other GPUs do not use this one.
            opts.update({"num_cpus": 1, "num_gpus": 1})
        if self.resource:
            opts["resources"] = {self.resource: 1}
        elif self.node_id:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        return opts


def resolve_target(resource: str, gpu: bool, threads: int) -> LatencyTarget:
    """The sweep's target on the running Ray cluster; UserError when no node offers ``resource``."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if resource:
        offering = [n for n in nodes if float(n.get("Resources", {}).get(resource, 0)) > 0]
        if not offering:
            offered = sorted(
                {
                    k
                    for n in nodes
                    for k in n.get("Resources", {})
                    if not k.startswith(("node:", "accelerator_type"))
                }
            )
            raise UserError(
                f"trial.latency_device: no node offers Ray resource {resource!r} "
                f"(offered: {', '.join(offered)})"
            )
        node = offering[0]
    else:
        me = ray.get_runtime_context().get_node_id()
        node = next((n for n in nodes if n.get("NodeID") == me), nodes[0])
    res = node.get("Resources", {})
    if gpu and float(res.get("GPU", 0)) < 1:
        where = f"the node offering {resource!r}" if resource else "the driver's node"
        raise UserError(f"trial.latency_device: {where} has no whole GPU to measure GPU latency on")
    return LatencyTarget(
        resource, gpu, max(1, int(threads)), str(node.get("NodeID", "")), float(res.get("CPU", 1))
    )


class _BuildOnly:
    """A ``models.latency.LatencyCache`` that answers every key with a placeholder, so
    ``prepare_trial`` builds the deployed model without timing it (the task times them together)."""

    def get(self, key: str) -> dict[str, Any]:
        nan = float("nan")
        return {"median_ms": nan, "p90_ms": nan, "device": "", "image_size": [0, 0], "runs": 0, "warmup": 0}

    def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return value


# Models timed round-robin at once: ratios between them are robust to load that drifts meanwhile
# (other processes on a shared machine); bounded so that large models (Swin-L on a small GPU) fit.
INTERLEAVE = 8


def _measure_in_isolation(specs: list[dict[str, Any]], threads: int) -> tuple[str, list[dict[str, Any]]]:
    """(device name, one LatencyResult dict per spec); runs inside the isolated Ray task.

    Each spec's deployed model is built the way a trial builds it (``prepare_trial``: base loaded,
    method applied, LoRA merged) and up to :data:`INTERLEAVE` of them are timed interleaved
    (``models.latency.measure_latency_interleaved``: warm-up, then one pass of each model per
    round, median per model), the spec's ``latency_warmup`` / ``latency_runs`` passes each."""
    import torch

    from models.latency import deployed_copy, device_name, measure_latency_interleaved
    from models.trial import prepare_trial
    from models.trial.data import resolve_device
    from search.cluster.storage import localize_paths

    torch.set_num_threads(threads)
    out: list[dict[str, Any]] = []
    for start in range(0, len(specs), INTERLEAVE):
        models: dict[str, Any] = {}
        settings: Any = None  # (TrialSpec, torch device) of the chunk's first spec
        for i, spec in enumerate(specs[start : start + INTERLEAVE]):
            # Data and base checkpoints may live on shared storage (s3://, gs://), as for a trial.
            prepared = prepare_trial(localize_paths(dict(spec)), latency_cache=_BuildOnly())
            if settings is None:
                settings = (prepared.spec, prepared.device)
            models[str(i)] = deployed_copy(prepared.model)
            del prepared  # only the deployed copy is kept (memory)
        s, device = settings
        res = measure_latency_interleaved(
            models, s.image_size, device, warmup=s.latency_warmup, runs=s.latency_runs
        )
        out.extend(res[str(i)].to_dict() for i in range(len(models)))
        del models
    dev = resolve_device(str(specs[0].get("device", "auto"))) if specs else torch.device("cpu")
    return device_name(dev), out


def measure_specs(target: LatencyTarget, specs: list[dict[str, Any]]) -> Any:
    """Start one isolated Ray task measuring ``specs`` (TrialSpec dicts); returns its ObjectRef."""
    import ray

    fn = ray.remote(_measure_in_isolation).options(**target.options())
    return fn.remote(list(specs), target.threads)


def device_label(target: LatencyTarget, spec: Mapping[str, Any]) -> str:
    """The target device's name as ``models.latency.device_name`` gives it there (one tiny task)."""
    import ray

    def probe(device: str, threads: int) -> str:
        import torch

        from models.latency import device_name
        from models.trial.data import resolve_device

        torch.set_num_threads(threads)
        return device_name(resolve_device(device))

    opts = {k: v for k, v in target.options().items() if k != "max_retries"}
    opts["num_cpus"] = 0 if not target.gpu else opts.get("num_cpus", 0)
    return str(
        ray.get(ray.remote(probe).options(**opts).remote(str(spec.get("device", "auto")), target.threads))
    )


def _asked(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(timed passes, warm-up passes) a trial spec asks its latency to be measured with."""
    return int(spec.get("latency_runs") or 0), int(spec.get("latency_warmup") or 0)


@dataclass
class ProfiledLatency:
    """Latency of points of the space from the profile (a :class:`search.engine.feasibility.PointCosts`).

    ``spec_for(params) -> TrialSpec dict`` builds the trial spec of a point; ``key_for(spec) ->
    (key, architecture)``. A miss starts an isolated measurement and raises :class:`LatencyPending`
    until it is done. Pickles without its in-flight measurements (a searcher checkpoint).
    """

    profile: LatencyProfile
    target: LatencyTarget
    device: str  # the target's device name (key field)
    spec_for: Callable[[Mapping[str, Any]], dict[str, Any]]
    key_for: Callable[[Mapping[str, Any], str], str]
    share: Callable[[str, dict[str, Any]], None] | None = None  # e.g. to the trials' cache actor
    pending: dict[str, Any] = field(default_factory=dict)  # key -> ObjectRef of its task
    used: set[str] = field(default_factory=set)
    shared: set[str] = field(default_factory=set)  # keys handed to ``share`` (hits included)
    measured: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # In-flight measurements (ObjectRefs) do not outlive the driver that started them: a
        # restored searcher measures again what it still needs.
        state = dict(self.__dict__)
        state["pending"] = {}
        state["shared"] = set()  # the restoring driver's cache actor may be a new one
        return state

    def prefetch(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Measure every missing architecture of ``points`` in one isolated task and wait for it
        (before the first trial: nothing else runs)."""
        import ray

        specs: dict[str, dict[str, Any]] = {}
        for p in points:
            spec = self.spec_for(p)
            key = self.key_for(spec, self.device)
            self.used.add(key)
            hit = self.profile.get(key, *_asked(spec))
            if hit is None:
                specs.setdefault(key, spec)
            else:
                self._share(key, hit)
        if specs:
            _, results = ray.get(measure_specs(self.target, list(specs.values())))
            for key, res in zip(specs, results):
                self._put(key, res)

    def _put(self, key: str, res: dict[str, Any]) -> None:
        res = dict(res)
        res["device"] = self.device
        stored = self.profile.put(key, res)
        self.measured += 1
        self._share(key, stored)

    def _share(self, key: str, value: dict[str, Any]) -> None:
        """Hand a figure the sweep uses to ``share`` once (the trials' cache holds only those)."""
        if self.share is not None and key not in self.shared:
            self.share(key, value)
            self.shared.add(key)

    def costs(self, params: Mapping[str, Any]) -> dict[str, float]:
        import ray

        spec = self.spec_for(params)
        key = self.key_for(spec, self.device)
        self.used.add(key)
        hit = self.profile.get(key, *_asked(spec))
        if hit is not None:
            self._share(key, hit)
        else:
            ref = self.pending.get(key)
            if ref is None:
                self.pending[key] = measure_specs(self.target, [spec])
                raise LatencyPending(key)
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                raise LatencyPending(key)
            del self.pending[key]
            self._put(key, ray.get(ref)[1][0])
            hit = self.profile.get(key, *_asked(spec))
            assert hit is not None
        return {"latency_ms": float(hit["median_ms"]), "latency_p90_ms": float(hit["p90_ms"])}
