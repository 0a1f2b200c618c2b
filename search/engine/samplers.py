"""Optuna side of the sweep: samplers, constraints, and a searcher that tells the truth.

Ray's ``OptunaSearch.on_trial_complete`` tells Optuna ``COMPLETE`` with the *last reported*
values of any trial that ends, so a trial stopped early by a scheduler (or stopped at once as
infeasible) enters the study with truncated values and corrupts the Pareto front.
:class:`TruthfulOptunaSearch` tells:

- ``COMPLETE`` with the objective values only when the final result says ``final=True`` and
  ``status="completed"`` with finite values;
- ``FAIL`` when the trial errored or its record says ``status="failed"``;
- ``PRUNED`` otherwise (early-stopped by MO-ASHA, infeasible, or stopped by a time budget).

Before telling, the constraint metrics seen in the result are stored as user attributes so the
sampler's ``constraints_func`` (:class:`ConstraintFunction`) sees them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

__all__ = ["ConstraintFunction", "make_sampler", "TruthfulOptunaSearch", "optuna_state_for"]

logger = logging.getLogger(__name__)


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
    """nsga2 | tpe | gp | random, seeded; constraints wired in where the sampler supports them."""
    cf: Callable[[FrozenTrial], Sequence[float]] | None = (
        ConstraintFunction(constraints) if constraints else None
    )
    # optuna 5 deprecates constraints_func (FutureWarning) in favour of Trial.set_constraint, which
    # its samplers do not read yet in 5.0; constraints_func is the path that works with all four.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
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
    """OptunaSearch that tells early-stopped / infeasible trials as PRUNED (see module docstring)."""

    def __init__(self, *args: Any, constraint_metrics: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._constraint_metrics = list(constraint_metrics)
        self.told: dict[str, str] = {}  # trial_id -> state name, for tests and the store

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
        self._completed_trials.add(trial_id)
        self.told[trial_id] = state.name
