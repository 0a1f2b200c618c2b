"""Repeat-free asking: a point the study has already trained is not trained again.

On a finite space (ranks, repetitions, placements, a learning-rate grid) samplers propose points
they have already seen: on the real recorded grid TPE spent up to 10 of one sweep's 51 trials on
the same head baseline (``class_mask`` at one learning rate, a single configuration). A repeat
takes a cluster slot and teaches nothing: the point's result is known. So the searcher
(:class:`search.engine.samplers.TruthfulOptunaSearch`) checks each proposal against this index
before it takes a slot:

- equal to a **trained** point: told to Optuna at once as ``COMPLETE`` with that point's values and
  constraint attributes (the sampler's model sees the point as it is) and user attribute
  ``repeat_of`` = the trained Optuna trial's number; the searcher asks again;
- equal to a point **still training**: told ``FAIL`` with ``repeat_of`` (its values are not known
  yet; FAIL trials are ignored by every sampler's model) and asked again;
- equal to a point **stopped early** (MO-ASHA pruned it): told ``PRUNED`` with ``repeat_of``, as the
  original was, and asked again. Without this, TPE under MO-ASHA re-proposed the good-looking
  points it had just seen stopped and retrained them: 7-17 of a 51-trial sweep's trials on the
  real grid (tuning seeds 100-109), compute spent to repeat a decision already made;
- after :data:`MAX_REPEAT_ASKS` repeats in a row (the index's ``max_asks``: fewer for a sampler
  whose ask is slow) on a finite space (the sampler keeps proposing known points: near exhaustion
  TPE may need hundreds of asks to hit the last untried ones), the untried point closest to what
  it proposed (fewest parameters differing; ties at random) is
  enqueued (``study.enqueue_trial``) and the next ask gets it: the search stays where the sampler
  wanted it, on a point not trained yet;
- once every point of a finite space is trained or training, a repeat is trained after all
  (nothing new is left; the sweep's budget is the user's choice).

Repeats are not trials of the sweep: no Tune trial, no store row, not in the budget. They are in
the Optuna study (marked ``repeat_of``), where optuna-dashboard shows them.

"Equal" means equal *active* parameters (:meth:`search.engine.space.SearchSpace.active`): the
flat encoding's inactive extras do not make a point new. The index is built from the study once
(so a searcher restored from the journal knows what was trained) and kept current by the
searcher's tells.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.results.journal import REJECTED_ATTR, REPEAT_ATTR

__all__ = [
    "MAX_REPEAT_ASKS",
    "REPEAT_ATTR",
    "REJECTED_ATTR",
    "Repeat",
    "RepeatIndex",
    "closest",
    "point_key",
    "running_keys",
]

# Proposals in a row that may be repeats before one is trained anyway (a sampler that keeps
# proposing known points on a nearly exhausted space must not spin).
MAX_REPEAT_ASKS = 20

PointKey = tuple[tuple[str, str], ...]


def point_key(active: Mapping[str, Any]) -> PointKey:
    """The identity of a point: its active parameters, numbers written exactly (``repr``)."""
    out = []
    for k in sorted(active):
        v = active[k]
        if isinstance(v, float) and math.isnan(v):
            continue  # an inactive parameter written as NaN (the store's form) is absent
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        out.append((k, repr(float(v)) if number else repr(v)))
    return tuple(out)


@dataclass(frozen=True)
class Repeat:
    """A proposal equal to a known point: the trained trial (``values`` set), a running one, or
    one stopped early (``pruned``)."""

    number: int
    values: tuple[float, ...] | None  # None: the point is still training (or was pruned)
    attrs: tuple[tuple[str, float], ...] = ()  # constraint metrics of the trained trial
    pruned: bool = False  # stopped early: its final values will never be known


class RepeatIndex:
    """The trained points of one study (``point_key -> Repeat``) and the space's points.

    ``points``: every point of a finite space (active parameters; None: infinite, e.g. a
    continuous learning rate); ``constraint_metrics``: the user attributes copied onto a repeat's
    tell, so a constrained sampler reads the same constraint values for it; ``max_asks``: repeats in
    a row before the closest untried point is enqueued (fewer for a sampler whose ask is slow)."""

    def __init__(
        self,
        points: Sequence[Mapping[str, Any]] | None,
        constraint_metrics: Sequence[str] = (),
        max_asks: int = MAX_REPEAT_ASKS,
    ) -> None:
        self.points = {point_key(p): dict(p) for p in points} if points is not None else None
        self.max_asks = max(1, int(max_asks))
        self.constraint_metrics = list(constraint_metrics)
        self.trained: dict[PointKey, Repeat] = {}
        self.rejected: set[PointKey] = set()  # infeasible points (decided before training)
        self.repeats = 0  # proposals told as repeats (not trained)
        self._synced = False

    def sync(self, study: optuna.Study, active: Any) -> None:
        """Index the study's trained trials once (``active(params) -> active params``)."""
        if self._synced:
            return
        self._synced = True
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if REJECTED_ATTR in t.user_attrs:
                self.rejected.add(point_key(active(t.params)))
            if REPEAT_ATTR in t.user_attrs or REJECTED_ATTR in t.user_attrs:
                continue
            if t.state == TrialState.PRUNED:
                self.add_pruned(point_key(active(t.params)), t.number)
            elif t.values is not None:
                self.add(point_key(active(t.params)), t)

    def add(self, key: PointKey, trial: FrozenTrial) -> None:
        """Record a trained trial of the study (COMPLETE with values)."""
        if trial.values is not None:
            self.add_values(key, trial.number, trial.values, trial.user_attrs)

    def add_values(
        self, key: PointKey, number: int, values: Sequence[float], user_attrs: Mapping[str, Any]
    ) -> None:
        """Record a trained point (the first trial of a point stays its reference)."""
        if key in self.trained:
            return
        attrs = tuple((m, float(user_attrs[m])) for m in self.constraint_metrics if m in user_attrs)
        self.trained[key] = Repeat(int(number), tuple(float(v) for v in values), attrs)

    def add_pruned(self, key: PointKey, number: int) -> None:
        """Record a point stopped early (a later trained trial of the same point stays its reference)."""
        if key not in self.trained:
            self.trained[key] = Repeat(int(number), None, pruned=True)

    def check(self, key: PointKey, running: Mapping[PointKey, int]) -> Repeat | None:
        """The known point ``key`` repeats, or None when it should be trained (new, or nothing new
        is left: every point of a finite space trained or running).
        ``running``: keys of the points training now -> their Optuna trial numbers."""
        if self.points is not None and not any(self._untried(running)):
            return None
        if key in self.trained:
            return self.trained[key]
        if key in running:
            return Repeat(running[key], None)
        return None

    def untried(self, running: Mapping[PointKey, int]) -> list[PointKey]:
        """Keys of the finite space's points neither trained nor running (empty when infinite)."""
        return list(self._untried(running))

    def _untried(self, running: Mapping[PointKey, int]) -> Iterator[PointKey]:
        for k in self.points or ():
            if k not in self.trained and k not in running and k not in self.rejected:
                yield k

    def screen(
        self, study: optuna.Study, trial: Any, key: PointKey, running: Mapping[PointKey, int], in_a_row: int
    ) -> bool:
        """True when ``trial`` (proposing ``key``) repeats a known point: it is told as a repeat and
        the caller asks again; the ``max_asks``-th repeat in a row enqueues the untried point
        closest to ``key`` for that ask. False: train ``trial``."""
        if in_a_row >= self.max_asks and self.points is None:
            return False  # an infinite space cannot run out of new points: train what comes
        repeat = self.check(key, running)
        if repeat is None:
            return False
        self.tell(study, trial, repeat)
        if in_a_row + 1 >= self.max_asks and self.points is not None:
            fresh = self.untried(running)
            if fresh:
                study.enqueue_trial(self.points[closest(key, fresh, random.Random(int(trial.number)))])
        return True

    def tell(self, study: optuna.Study, trial: Any, repeat: Repeat) -> None:
        """Tell ``trial`` as the repeat it is (module docstring) and count it."""
        trial.set_user_attr(REPEAT_ATTR, repeat.number)
        for m, v in repeat.attrs:
            trial.set_user_attr(m, v)
        if repeat.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif repeat.values is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, list(repeat.values), state=TrialState.COMPLETE)
        self.repeats += 1


def closest(key: PointKey, candidates: Sequence[PointKey], rng: random.Random) -> PointKey:
    """The candidate with the fewest parameters differing from ``key`` (ties: ``rng``'s pick)."""
    mine = dict(key)

    def differing(k: PointKey) -> int:
        other = dict(k)
        return sum(mine.get(n) != other.get(n) for n in mine.keys() | other.keys())

    best = min(differing(k) for k in candidates)
    ties = [k for k in candidates if differing(k) == best]
    return ties[rng.randrange(len(ties))]


def running_keys(pairs: Iterable[tuple[PointKey, int]]) -> dict[PointKey, int]:
    """``{key: number}`` of the running points (the first trial of a key wins)."""
    out: dict[PointKey, int] = {}
    for k, n in pairs:
        out.setdefault(k, n)
    return out
