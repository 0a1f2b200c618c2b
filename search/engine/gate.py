"""The sweep's pre-training gate: what the runner hands the searcher so that a point's parameters and
latency are known, and its constraints decided, before it takes a slot.

- :func:`start_sweep_latency` (once per sweep): resolves the target device (UserError when no node
  offers it), opens the latency profile (the sweep's file + the user cache) and starts the sweep's
  latency cache actor (:mod:`search.engine.latency_cache`) that trials read their figure from.
- :func:`study_gate` (once per study): the :class:`SweepCosts` of the domain's points
  (parameters from :class:`search.engine.feasibility.ModelAccounting` when a constraint needs them,
  latency from the profile) with the space's architectures measured up front.
- :class:`StoreRejectSink`: writes a rejected point to the store as an ``infeasible`` row (its
  parameters, costs, the reason; never in a front).
- :func:`remeasure_fronts` (after the last trial): the fronts' members timed again in isolation.

Wiring: the runner holds one :class:`SweepGate` (picklable: it travels inside the searcher's
checkpoint). Before the experiment starts, :meth:`SweepGate.prepare` starts the latency profile
(:func:`start_sweep_latency`) and builds every study's gate (:func:`study_gate`), so every
architecture of the space is measured while nothing trains (a measurement started while trials
hold the device would wait for them, and they for the driver). The searcher factory
(:class:`search.engine.studies.SearcherFactory`) then calls :meth:`SweepGate.apply` on each
study's searcher (``searcher.set_gate(costs, constraints, fill_values, StoreRejectSink(...))``).
After the last trial and before Ray shuts down the runner calls :func:`remeasure_fronts`. A
restored gate (resume) rebuilds itself lazily from the profile files: nothing is measured twice.

Only the default model trial (``search.engine.model_trial:prepare``) has a model to account and
measure; sweeps of other trial functions get no gate (their trials decide constraints themselves).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import SweepConfig, TrialSettings
from search.engine.feasibility import ModelAccounting, violations
from search.engine.latency_profile import (
    LatencyProfile,
    LatencyTarget,
    ProfiledLatency,
    device_label,
    profile_key,
    resolve_target,
    user_cache_file,
)
from search.results.status import REJECTED_PREFIX

__all__ = [
    "SweepLatency",
    "SweepCosts",
    "SweepGate",
    "fill_values",
    "uses_latency_profile",
    "StoreRejectSink",
    "start_sweep_latency",
    "study_gate",
    "remeasure_fronts",
]

logger = logging.getLogger(__name__)
PARAM_METRICS = ("trainable_params", "total_params", "trainable_pct")


def _model_trial(config: SweepConfig) -> bool:
    return config.trial.function == TrialSettings().function


def uses_latency_profile(config: SweepConfig) -> bool:
    """Whether the sweep's latency comes from the profile (the default model trial with
    ``trial.latency_per_architecture``)."""
    return config.trial.latency_per_architecture and _model_trial(config)


@dataclass
class SweepLatency:
    """The sweep's latency profile, target device and its name, and the trials' cache actor."""

    profile: LatencyProfile
    target: LatencyTarget
    device: str
    actor: Any


def start_sweep_latency(config: SweepConfig, out: Path, sweep_id: str, context: Any) -> SweepLatency | None:
    """Profile + target + cache actor (module docstring); None when the sweep does not use them.
    ``context``: any study's ``TrialContext`` (the device is the sweep's, not the study's)."""
    if not uses_latency_profile(config):
        return None
    from search.engine.latency_cache import start_latency_cache

    target = resolve_target(
        config.trial.latency_device,
        config.budget.gpus_per_trial > 0,
        int(max(1, config.budget.cpus_per_trial)),
    )
    label = device_label(target, _spec_for({"method": "full_head", "lr": 1e-3, "iterations": 1}, context))
    profile = LatencyProfile(out / "state" / "latency_profile.json", user_cache_file())
    # Seeded only with what this sweep used before (resume: OUT/state/latency.json); the studies'
    # gates hand it each figure they use (ProfiledLatency.share), cache hits included.
    actor = start_latency_cache(sweep_id, out / "state" / "latency.json", device=label)
    return SweepLatency(profile, target, label, actor)


def _spec_for(params: Mapping[str, Any], context: Any) -> dict[str, Any]:
    from search.engine.model_trial import spec_dict

    return spec_dict(dict(params), context)


def _key_for(spec: Mapping[str, Any], device: str, num_classes: int) -> str:
    """The profile key of a trial spec (what ``models.trial.prepare_trial`` asks its cache for)."""
    from models.latency import deployed_architecture
    from models.peft import build_method_config
    from models.trial import TrialSpec

    s = TrialSpec.from_dict(dict(spec))
    arch = deployed_architecture(build_method_config(s.method, **dict(s.method_params)))
    return profile_key(s.model, num_classes, s.image_size, device, arch)


class _ShareWithTrials:
    """Every new profile entry also goes to the sweep's cache actor, where trials read it."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def __call__(self, key: str, value: dict[str, Any]) -> None:
        from search.engine.latency_cache import SweepLatencyCache

        SweepLatencyCache(self.sweep_id).put(key, value)


@dataclass
class SweepCosts:
    """Pre-training costs of a domain's points: parameters first (cheap), and latency only for
    points whose parameters satisfy the constraints (a measurement is not spent on a point that is
    rejected anyway)."""

    constraints: list[dict[str, Any]]
    accounting: ModelAccounting | None = None
    latency: ProfiledLatency | None = None

    def costs(self, params: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.accounting is not None:
            out.update(self.accounting.costs(params))
            if violations(out, self.constraints):
                return out
        if self.latency is not None:
            out.update(self.latency.costs(params))
        return out


def study_gate(config: SweepConfig, context: Any, latency: SweepLatency | None) -> SweepCosts | None:
    """The searcher's ``costs`` for one study (``context``: its ``TrialContext``: model, domain,
    trial settings); None when nothing is decided before training."""
    if not _model_trial(config):
        return None
    constraints = [c.model_dump() for c in config.constraints]
    accounting = None
    if any(c["metric"] in PARAM_METRICS for c in constraints):
        accounting = ModelAccounting.for_sweep(context.model, context.domain)
    profiled = None
    if latency is not None:
        from search.engine.feasibility import domain_num_classes
        from search.engine.space import grid_points

        n_classes = accounting.num_classes if accounting else domain_num_classes(context.domain)
        profiled = ProfiledLatency(
            latency.profile,
            latency.target,
            latency.device,
            functools.partial(_spec_for, context=context),
            functools.partial(_key_for, num_classes=n_classes),
            share=_ShareWithTrials(context.sweep_id),
        )
        # Up front, before any trial: one representative point per architecture of the space.
        lrs = list(config.space.lr_grid or [config.space.lr.low])
        first = config.space.iterations[0]
        points = [p for p in grid_points(config.space, lrs[:1]) if p["iterations"] == first]
        t0 = time.time()
        profiled.prefetch(points)
        logger.info("latency profile: %d architectures ready in %.1f s", len(profiled.used), time.time() - t0)
    if accounting is None and profiled is None:
        return None
    return SweepCosts(constraints, accounting, profiled)


class StoreRejectSink:
    """``reject_sink`` of the searcher: one ``infeasible`` row per rejected point (picklable)."""

    def __init__(
        self,
        store_root: str,
        sweep_id: str,
        domain: str,
        sampler: str,
        study: str | None = None,
        model: str | None = None,
    ) -> None:
        self.store_root, self.sweep_id, self.domain, self.sampler = store_root, sweep_id, domain, sampler
        self.study, self.model = study, model

    def __call__(self, params: dict[str, Any], costs: dict[str, float], reason: str) -> None:
        from search.engine.callbacks import trial_row
        from search.results.store import ResultStore

        now = time.time()
        result = {
            **costs,
            "final": True,
            "status": "infeasible",
            "stop_reason": f"{REJECTED_PREFIX}{reason}",
            "iterations_done": 0,
            "started_at": now,
            "finished_at": now,
            "wall_seconds": 0.0,
        }
        row = trial_row(
            f"rejected-{uuid.uuid4().hex[:12]}",
            params,
            result,
            sweep_id=self.sweep_id,
            domain=self.domain,
            sampler=self.sampler,
            study=self.study,
            model=self.model,
        )
        ResultStore(self.store_root).upsert_trials([row])


def fill_values(config: SweepConfig) -> dict[str, float]:
    """What a rejected point is told to Optuna for an objective only training gives (e.g. AP): the
    objective's hypervolume reference when the config sets one, else 0 (AP's floor). Objectives
    known before training (parameters, latency) are told with their real value."""
    return {o.name: float(o.ref) if o.ref is not None else 0.0 for o in config.objectives if o.mode == "max"}


class SweepGate:
    """Every study's pre-training gate for one sweep (module docstring: wiring).

    Holds only plain settings when pickled (a searcher checkpoint): the profile, the cache actor and
    the studies' costs are rebuilt on first use in the restoring process."""

    def __init__(
        self,
        config: SweepConfig,
        out: Path,
        sweep_id: str,
        contexts: Mapping[str, Any],
        store_root: str,
        labels: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.config, self.out, self.sweep_id = config, Path(out), sweep_id
        self.contexts = dict(contexts)
        self.store_root = store_root
        self.labels = dict(labels or {})  # study -> (domain name, model label)
        self._latency: SweepLatency | None = None
        self._started = False
        self._costs: dict[str, SweepCosts | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update({"_latency": None, "_started": False, "_costs": {}})
        return state

    @property
    def active(self) -> bool:
        """Whether anything is decided before training (the default model trial only)."""
        return _model_trial(self.config) and (
            bool(self.config.constraints) or self.config.trial.latency_per_architecture
        )

    def latency(self) -> SweepLatency | None:
        """The sweep's latency profile, target and cache actor (started on first use)."""
        if not self._started:
            any_context = next(iter(self.contexts.values()))
            self._latency = start_sweep_latency(self.config, self.out, self.sweep_id, any_context)
            self._started = True
        return self._latency

    def costs(self, study: str) -> SweepCosts | None:
        if study not in self._costs:
            self._costs[study] = study_gate(self.config, self.contexts[study], self.latency())
        return self._costs[study]

    def prepare(self) -> None:
        """Before the first trial: the profile started, every study's architectures measured."""
        if self.active:
            for name in self.contexts:
                self.costs(name)

    def apply(self, searcher: Any, study: str) -> None:
        """Give ``searcher`` (a ``TruthfulOptunaSearch``) the study's gate."""
        if not self.active or study not in self.contexts:
            return
        costs = self.costs(study)
        if costs is None:
            return
        domain, model = self.labels.get(study, (str(self.contexts[study].domain.get("name", study)), None))
        searcher.set_gate(
            costs,
            [c.model_dump() for c in self.config.constraints],
            fill_values(self.config),
            StoreRejectSink(self.store_root, self.sweep_id, domain, self.config.sampler.name, study, model),
        )

    def save_profile(self) -> None:
        """Copy every profile entry the studies used into the sweep's own profile file."""
        lat = self._latency
        if lat is None:
            return
        used: set[str] = set()
        for c in self._costs.values():
            if c is not None and c.latency is not None:
                used |= c.latency.used
        lat.profile.save_sweep_copy(sorted(used))


def remeasure_fronts(
    fronts: Mapping[str, Any], contexts: Mapping[str, Any], latency: SweepLatency, out: Path
) -> dict[str, Any]:
    """Time every final front member's architecture again, in isolation, after the last trial
    (``fronts``: study -> ``FrontResult``; ``contexts``: study -> ``TrialContext``); writes
    ``OUT/latency_check.json`` (per member: the profile's figure the front used, the new figure,
    their relative difference) for the report. Returns what it wrote."""
    import ray

    from models.data.coco import atomic_write_json
    from search.engine.feasibility import domain_num_classes
    from search.engine.latency_profile import measure_specs
    from search.engine.space import PARAM_COLUMNS

    members: list[tuple[str, str, str, float]] = []  # study, trial_id, key, figure used
    specs: dict[str, dict[str, Any]] = {}
    for name, front in fronts.items():
        ctx = contexts.get(name)
        if ctx is None or not len(front.front):
            continue
        n_classes = domain_num_classes(ctx.domain)
        for row in front.front.to_dict(orient="records"):
            params = {k: row[k] for k in PARAM_COLUMNS if row.get(k) is not None and row.get(k) == row.get(k)}
            spec = _spec_for(params, ctx)
            key = _key_for(spec, latency.device, n_classes)
            specs.setdefault(key, spec)
            members.append((name, str(row["trial_id"]), key, float(row.get("latency_ms") or "nan")))
    if not specs:
        return {}
    _, results = ray.get(measure_specs(latency.target, list(specs.values())))
    again = {k: float(r["median_ms"]) for k, r in zip(specs, results)}
    rows = [
        {
            "study": d,
            "trial_id": t,
            "architecture": k.split("|", 4)[-1],
            "latency_ms": used,
            "remeasured_ms": again[k],
            "relative_difference": (again[k] - used) / used if used else None,
        }
        for d, t, k, used in members
    ]
    diffs = [abs(float(r["relative_difference"])) for r in rows if r["relative_difference"] is not None]
    data = {
        "device": latency.device,
        "what": "front members' latency re-measured in isolation after the sweep vs the profile figure used",
        "max_abs_relative_difference": max(diffs) if diffs else None,
        "members": rows,
    }
    atomic_write_json(out / "latency_check.json", data)
    return data
