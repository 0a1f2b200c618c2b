"""Optuna side of the sweep: samplers that see the whole space, constraints decided before a slot,
and a searcher that tells the truth.

**What each sampler models.** The space is conditional (method -> that method's parameters).

- TPE: ``multivariate=True, group=True``: the define-by-run space is split into groups of
  parameters that always occur together (``method, lr, iterations``; each method's own
  parameters), and each group is modelled jointly (a multivariate Parzen estimator per group)
  instead of one parameter at a time; ``constant_liar=True`` under concurrency. These settings
  (and 4 startup trials) were chosen on tuning seeds, not on the seeds ``bench search`` reports
  (:mod:`search.benchmarks.sampler_settings`).
- NSGA-II and GP model only the parameters every trial shares; a parameter that is absent from
  some trials is sampled independently at random. So they get the *flat* encoding
  (:class:`search.engine.space.SearchSpace` with ``encoding="flat"``): every method's parameters
  are drawn in every trial, with the same names and choices, and the trial uses those of its
  method. All parameters are then in every trial: NSGA-II's crossover and mutation and the GP's
  kernel cover the method-specific ones too (the inactive ones are carried along, as in SMAC's
  imputation of inactive hyperparameters, and cost only some sampling efficiency). The config
  handed to Tune (and so the store) holds only the active ones.
- random: the conditional space (there is nothing to model).

**Constraints before a slot.** :class:`TruthfulOptunaSearch` with ``costs`` (a
:class:`search.engine.feasibility.PointCosts`: parameters from accounting, latency from the
latency profile) checks each proposed point before returning it to Tune. An infeasible point is
told to Optuna at once as ``COMPLETE`` with its known costs (and the objective's reference value,
e.g. AP 0, for metrics only training gives) and its constraint values stored for the sampler's
``constraints_func`` (NSGA-II's constrained domination, TPE's feasible/infeasible split and GP's
constraint models all read COMPLETE trials only); the searcher asks again. The point takes no
slot; Tune's ``num_samples`` (the budget) counts trained trials only. Each rejection is kept in
``rejected`` and handed to ``reject_sink`` (the runner writes an ``infeasible`` row to the store,
never part of a front). While the latency of a proposed point is being measured (the profile's
isolated measurement), :meth:`suggest` returns ``None`` (Tune asks again later) and keeps the point.

**No repeats.** A proposal equal to a point the study has already trained (or is training) takes
no slot: it is told to Optuna at once with the trained point's values (FAIL while that point still
trains, PRUNED when MO-ASHA stopped it) and the searcher asks again (:mod:`search.engine.repeats`;
on the real recorded grid this lifted TPE's worst tuning seed from 0.92 to 0.98 of the grid's
hypervolume). Once a finite space is exhausted, repeats train.

**Truthful tells.** Ray's ``OptunaSearch.on_trial_complete`` tells ``COMPLETE`` with the *last
reported* values of any trial that ends, so a trial stopped early by a scheduler would enter the
study with truncated values. This searcher tells:

- ``COMPLETE`` with the objective values only when the final result says ``final=True`` and
  ``status="completed"`` with finite values;
- ``FAIL`` when the trial errored or its record says ``status="failed"``;
- ``PRUNED`` otherwise (early-stopped by MO-ASHA, infeasible in the trial, stopped by a time budget).

The searcher is a self-contained object (one study, one sampler, its costs): a multiplexing
searcher can hold one per study.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search.config import SearchSpaceConfig
from search.engine.feasibility import PointCosts, violations
from search.engine.latency_profile import LatencyPending
from search.engine.repeats import MAX_REPEAT_ASKS, REJECTED_ATTR, RepeatIndex, point_key, running_keys
from search.engine.space import SearchSpace

__all__ = [
    "ConstraintFunction",
    "ENCODINGS",
    "REPEAT_ASKS",
    "encoding_for",
    "make_sampler",
    "make_searcher",
    "TruthfulOptunaSearch",
    "optuna_state_for",
]

logger = logging.getLogger(__name__)

# The space encoding each sampler gets (see module docstring).
ENCODINGS: dict[str, str] = {"tpe": "conditional", "nsga2": "flat", "gp": "flat", "random": "conditional"}


# Repeats in a row before the searcher asks for the closest untried point instead
# (search.engine.repeats): each turned-away proposal is another ask, milliseconds for TPE, NSGA-II
# and random, but about 2 s for GP on the real grid (its acquisition optimisation), where GP kept
# proposing trained points: 439 such asks and one 51-trial replay unfinished after 18 minutes.
REPEAT_ASKS: dict[str, int] = {"gp": 3}  # others: MAX_REPEAT_ASKS


def encoding_for(sampler: optuna.samplers.BaseSampler) -> str:
    """The space encoding a sampler object needs (:data:`ENCODINGS` by its class)."""
    if isinstance(sampler, (optuna.samplers.NSGAIISampler, optuna.samplers.GPSampler)):
        return "flat"
    return "conditional"


class ConstraintFunction:
    """Optuna ``constraints_func``: one value per constraint, <= 0 satisfied (picklable).

    Reads ``trial.user_attrs[metric]``; a metric not yet known counts as satisfied (0.0), since a
    missing value must not look like a violation of a measured one."""

    def __init__(self, constraints: Sequence[dict[str, Any]]) -> None:
        self.constraints = [dict(c) for c in constraints]

    def __call__(self, trial: FrozenTrial) -> list[float]:
        out: list[float] = []
        for c in self.constraints:
            v = trial.user_attrs.get(c["metric"])
            if v is None or not math.isfinite(float(v)):
                out.append(0.0)
            else:
                v = float(v)
                out.append(v - c["value"] if c["op"] == "<=" else c["value"] - v)
        return out


def make_sampler(
    name: str,
    seed: int,
    constraints: Sequence[dict[str, Any]] = (),
    *,
    population_size: int = 8,
    startup_trials: int = 4,
) -> optuna.samplers.BaseSampler:
    """nsga2 | tpe | gp | random, seeded; constraints wired in where the sampler supports them.
    Use the space encoding :data:`ENCODINGS` names for the sampler (:func:`make_searcher` does)."""
    cf: Callable[[FrozenTrial], Sequence[float]] | None = (
        ConstraintFunction(constraints) if constraints else None
    )
    # optuna 5 deprecates constraints_func (FutureWarning) in favour of Trial.set_constraint, which
    # its samplers do not read yet in 5.0; constraints_func is the path that works with all four.
    # group=True is experimental in optuna 5 (ExperimentalWarning) but stable in behaviour.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(name, seed, cf, population_size, startup_trials)


def _make_sampler(
    name: str,
    seed: int,
    cf: Callable[[FrozenTrial], Sequence[float]] | None,
    population_size: int,
    startup_trials: int,
) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed, constraints_func=cf)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials,
            constraints_func=cf,
            multivariate=True,
            group=True,
            # Running trials count as bad ones, so concurrent asks spread out instead of repeating
            # one point (optuna 5's default, stated: on the real table at concurrency 4 it is worth
            # 0.98 vs 0.95 of the grid's HV on tuning seeds; search/benchmarks/sampler_settings_cpu.txt).
            constant_liar=True,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=startup_trials, constraints_func=cf, warn_independent_sampling=False
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def optuna_state_for(
    result: dict[str, Any] | None, metrics: Sequence[str], error: bool
) -> tuple[TrialState, list[float] | None]:
    """The state (and values) a finished Tune trial should be told to Optuna with."""
    if error or result is None:
        return TrialState.FAIL, None
    status = result.get("status")
    if status == "failed":
        return TrialState.FAIL, None
    if result.get("final") is True and status == "completed":
        vals = [result.get(m) for m in metrics]
        if all(v is not None and math.isfinite(float(v)) for v in vals):
            return TrialState.COMPLETE, [float(v) for v in vals if v is not None]
        return TrialState.FAIL, None
    return TrialState.PRUNED, None


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch that decides constraints before a slot and tells the truth (module docstring).

    ``costs``: pre-training metrics of a point (None: nothing decided before training);
    ``constraints``: the sweep's constraints as dicts (metric, op, value); ``fill_values``: the
    value an infeasible point is told with for an objective it has no figure for (the objective's
    reference value, e.g. ``{"ap": 0.0}``; default: the worst value the study has seen, else 0);
    ``reject_sink(params, costs, reason)``: called once per rejected point (e.g. writes the store);
    ``max_rejections``: consecutive rejections after which the search ends (the space is all but
    infeasible)."""

    def __init__(
        self,
        *args: Any,
        constraint_metrics: Sequence[str] = (),
        costs: PointCosts | None = None,
        constraints: Sequence[Mapping[str, Any]] = (),
        fill_values: Mapping[str, float] | None = None,
        reject_sink: Callable[[dict[str, Any], dict[str, float], str], None] | None = None,
        max_rejections: int = 2000,
        skip_repeats: bool = True,
        max_repeat_asks: int = MAX_REPEAT_ASKS,
        **kwargs: Any,
    ) -> None:
        space = kwargs.get("space")
        sampler = kwargs.get("sampler")
        if isinstance(space, SearchSpace) and sampler is not None:
            # The encoding follows the sampler whoever builds the searcher (a multiplexer too).
            kwargs["space"] = SearchSpace(space.space, encoding=encoding_for(sampler))
        super().__init__(*args, **kwargs)
        self._constraint_metrics = list(constraint_metrics) or [str(c["metric"]) for c in constraints]
        self._costs = costs
        self._constraints = [dict(c) for c in constraints]
        self._fill = dict(fill_values or {})
        self._reject_sink = reject_sink
        self._max_rejections = int(max_rejections)
        self._skip_repeats = bool(skip_repeats)
        self._max_repeat_asks = int(max_repeat_asks)
        self._repeats: RepeatIndex | None = None  # built on first use (search.engine.repeats)
        self._held: tuple[Any, dict[str, Any]] | None = None  # (optuna trial, params) awaiting latency
        self.told: dict[str, str] = {}  # trial_id -> state name, for tests and the store
        self.rejected: list[dict[str, Any]] = []  # {params, costs, reason}
        self.pre_costs: dict[str, dict[str, float]] = {}  # trial_id -> costs decided before its slot

    def set_gate(
        self,
        costs: PointCosts | None,
        constraints: Sequence[Mapping[str, Any]] = (),
        fill_values: Mapping[str, float] | None = None,
        reject_sink: Callable[[dict[str, Any], dict[str, float], str], None] | None = None,
    ) -> None:
        """Decide constraints before a slot from now on (for searchers built elsewhere, e.g. by a
        multiplexer's factory): the same as the constructor's arguments of the same names."""
        self._costs = costs
        self._constraints = [dict(c) for c in constraints]
        self._constraint_metrics = self._constraint_metrics or [str(c["metric"]) for c in constraints]
        self._fill = dict(fill_values or {})
        self._reject_sink = reject_sink

    # ------------------------------------------------------------------ asking

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        assert self._ot_study is not None
        ot_trial = self._ot_study.ask()
        return ot_trial, dict(self._suggest_from_define_by_run_func(self._space, ot_trial))

    def _active(self, params: dict[str, Any]) -> dict[str, Any]:
        space = self._space
        return space.active(params) if isinstance(space, SearchSpace) else params

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not callable(self._space) or self._ot_study is None:
            return super().suggest(trial_id)  # type: ignore[no-any-return]
        if self._held is not None:
            ot_trial, params = self._held
            self._held = None
        else:
            ot_trial, params = self._ask()
        costs: dict[str, float] = {}
        repeats_in_a_row = 0
        for _ in range(self._max_rejections):
            if self._costs is not None:
                try:
                    costs = self._costs.costs(self._active(params))
                except LatencyPending:
                    self._held = (ot_trial, params)
                    return None
                bad = violations(costs, self._constraints)
                if bad:
                    self._reject(ot_trial, params, costs, bad)
                    ot_trial, params = self._ask()
                    continue
            if not self._screen_repeat(ot_trial, params, repeats_in_a_row):
                break
            repeats_in_a_row += 1
            ot_trial, params = self._ask()
        else:
            logger.warning(
                "%d points in a row broke the constraints before training: search ended", self._max_rejections
            )
            assert self._ot_study is not None
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            return Searcher.FINISHED  # type: ignore[no-any-return]
        self._ot_trials[trial_id] = ot_trial
        if costs:
            self.pre_costs[trial_id] = costs
        return self._active(params)

    @property
    def repeats(self) -> int:
        """Proposals told as repeats of known points (not trained; :mod:`search.engine.repeats`)."""
        index = getattr(self, "_repeats", None)
        return index.repeats if index is not None else 0

    def _screen_repeat(self, ot_trial: Any, params: dict[str, Any], in_a_row: int) -> bool:
        """True when the proposal repeated a known point and was told so (ask again;
        :meth:`search.engine.repeats.RepeatIndex.screen`); builds the index on first use."""
        if not getattr(self, "_skip_repeats", True) or self._ot_study is None:
            return False
        if getattr(self, "_repeats", None) is None:
            points = self._space.points() if isinstance(self._space, SearchSpace) else None
            max_asks = getattr(self, "_max_repeat_asks", MAX_REPEAT_ASKS)
            self._repeats = RepeatIndex(points, self._constraint_metrics, max_asks=max_asks)
        assert self._repeats is not None
        self._repeats.sync(self._ot_study, self._active)
        running = running_keys(
            (point_key(self._active(t.params)), t.number)
            for tid, t in self._ot_trials.items()
            if tid not in self._completed_trials
        )
        return self._repeats.screen(
            self._ot_study, ot_trial, point_key(self._active(params)), running, in_a_row
        )

    def _reject(
        self, ot_trial: Any, params: dict[str, Any], costs: dict[str, float], bad: dict[str, float]
    ) -> None:
        """Tell Optuna the infeasible point now (COMPLETE + constraint values; module docstring)."""
        assert self._ot_study is not None
        for m, v in costs.items():
            with contextlib.suppress(TypeError, ValueError):
                ot_trial.set_user_attr(m, float(v))
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        values = [
            float(costs[m]) if m in costs else self._fill_value(m, mode) for m, mode in zip(metrics, modes)
        ]
        reason = "; ".join(
            f"{m}={costs[m]:.4g} violates {c['metric']} {c['op']} {c['value']}"
            for m in bad
            for c in self._constraints
            if c["metric"] == m
        )
        ot_trial.set_user_attr(REJECTED_ATTR, reason)
        self._ot_study.tell(ot_trial, values, state=TrialState.COMPLETE)
        active = self._active(params)
        if getattr(self, "_repeats", None) is not None:
            self._repeats.rejected.add(point_key(active))  # known: never an "untried" point
        self.rejected.append({"params": active, "costs": dict(costs), "reason": reason})
        if self._reject_sink is not None:
            try:
                self._reject_sink(active, dict(costs), reason)
            except Exception as exc:  # noqa: BLE001 - the record of a rejection must not stop the sweep
                logger.warning("recording a rejected point failed: %s", exc)

    def _fill_value(self, metric: str, mode: str) -> float:
        if metric in self._fill:
            return float(self._fill[metric])
        assert self._ot_study is not None
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        j = metrics.index(metric)
        seen = [
            t.values[j]
            for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None
        ]
        if not seen:
            return 0.0
        return float(min(seen) if mode == "max" else max(seen))

    # ------------------------------------------------------------------ telling

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        state, values = optuna_state_for(result, metrics, error)
        if result:
            for m in self._constraint_metrics:
                v = result.get(m)
                if v is not None:
                    with contextlib.suppress(TypeError, ValueError):
                        ot_trial.set_user_attr(m, float(v))
        try:
            assert self._ot_study is not None
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # noqa: BLE001 - a bad tell must not kill the sweep
            logger.warning("optuna tell failed for %s: %s", trial_id, exc)
        else:
            index = getattr(self, "_repeats", None)
            if index is not None and state in (TrialState.COMPLETE, TrialState.PRUNED):
                key = point_key(self._active(ot_trial.params))
                if state == TrialState.PRUNED:
                    index.add_pruned(key, ot_trial.number)
                elif values is not None:
                    attrs = {
                        m: result[m] for m in self._constraint_metrics if result and result.get(m) is not None
                    }
                    index.add_values(key, ot_trial.number, values, attrs)
        self._completed_trials.add(trial_id)
        self.told[trial_id] = state.name


def make_searcher(
    sampler: str,
    seed: int,
    space: SearchSpaceConfig,
    metrics: Sequence[str],
    modes: Sequence[str],
    *,
    constraints: Sequence[Mapping[str, Any]] = (),
    population_size: int = 8,
    startup_trials: int = 4,
    costs: PointCosts | None = None,
    fill_values: Mapping[str, float] | None = None,
    reject_sink: Callable[[dict[str, Any], dict[str, float], str], None] | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    study_name: str | None = None,
    skip_repeats: bool = True,
) -> TruthfulOptunaSearch:
    """The searcher of one study: the sampler, the space encoded for it, constraints before slots."""
    cons = [dict(c) for c in constraints]
    kwargs: dict[str, Any] = {}
    if study_name:
        kwargs["study_name"] = study_name
    return TruthfulOptunaSearch(
        space=SearchSpace(space),  # encoded for the sampler by the searcher (encoding_for)
        metric=list(metrics),
        mode=list(modes),
        sampler=make_sampler(
            sampler, seed, cons, population_size=population_size, startup_trials=startup_trials
        ),
        points_to_evaluate=[dict(p) for p in points_to_evaluate] if points_to_evaluate else None,
        constraint_metrics=[str(c["metric"]) for c in cons],
        costs=costs,
        constraints=cons,
        fill_values=fill_values,
        reject_sink=reject_sink,
        skip_repeats=skip_repeats,
        max_repeat_asks=REPEAT_ASKS.get(sampler, MAX_REPEAT_ASKS),
        **kwargs,
    )
