"""Many studies in one Tune run: a searcher that multiplexes per-study searchers.

A sweep over several models and domains has one *study* per (model, domain) pair, each with its
own Optuna study, scheduler state, store rows, front and W&B group. All of them run in ONE Tune
experiment, so the cluster's slots are shared and never idle at one study's tail:

- :class:`StudyMux` is the experiment's searcher. Whenever Tune has a free slot (Tune's global
  ``max_concurrent_trials`` and the cluster's resources decide that) it asks the mux, which picks
  the study furthest below its fair share of the running trials, the share being proportional to
  each study's *remaining* budget (trials not started yet), and asks that study's own searcher
  (built by :mod:`search.engine.samplers`; wrapped, not rewritten). A study whose budget is spent
  has no share, so its slots go to the others on the next ask. A total budget stops every study.
  The suggestion carries the study's name under :data:`STUDY_KEY`.
- :class:`StudyScheduler` routes each trial's results to its own study's scheduler (MO-ASHA
  compares a trial only with trials of the same study).
- :class:`StudyCallbacks` routes Tune's callback events to the study's own callbacks (store
  writer, W&B).
- :func:`run_study_trial` is the trainable: it runs :func:`search.engine.trainable.run_tune_trial`
  with the trial's study context.

Optuna persistence: every study lives in an Optuna storage (:func:`optuna_storage`: a
JournalStorage file in the output folder, or an RDB URL the user gives), so ``optuna-dashboard``
and ``optuna.load_study`` see every study. The mux's checkpoint (Tune saves it with the experiment)
holds only its counters and, per study, which Optuna trial belongs to which Tune trial; on resume
each study's searcher re-opens its study from the storage, so the sampler's history comes from
there, and trials the storage still shows as RUNNING that no restored Tune trial owns (started
after the last snapshot of a killed driver) are told FAIL.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

__all__ = [
    "STUDY_KEY",
    "StudySpec",
    "SearcherFactory",
    "StudyMux",
    "StudyScheduler",
    "StudyCallbacks",
    "run_study_trial",
    "optuna_storage",
    "fair_pick",
]

logger = logging.getLogger(__name__)

# The trial config key that names a trial's study (not a search parameter: never in PARAM_COLUMNS).
STUDY_KEY = "study"


@dataclass(frozen=True)
class StudySpec:
    """One (model, domain) pair of a sweep."""

    name: str  # the study's key: the domain name in a one-model sweep, else "<model>.<domain>"
    model: str  # the model entry's label
    domain: str
    trials: int  # this study's trial budget
    index: int  # position in the sweep (seeds the study's sampler)


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


class _JournalFile(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file without an fsync per record.

    Optuna syncs every append (~10 per trial): under load that was most of the driver's time per
    trial event (bench engine). A process that dies loses nothing (its writes are in the page
    cache); only a machine crash can lose the journal's last records, and a resume then closes or
    re-asks those trials (see :meth:`StudyMux._rebind`). The lock (an open-lock, for NFS) stays."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        from optuna.storages.journal._file import get_lock_file

        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as fh:
            fh.write(text.encode("utf-8"))


def optuna_storage(url: str) -> optuna.storages.BaseStorage:
    """A JournalStorage on a file path (``journal.log``), or an RDB storage for a database URL.
    One storage object per URL and process: the studies of a sweep share it (a journal is one file
    that every storage object would otherwise re-read)."""
    storage = _STORAGES.get(url)
    if storage is not None:
        return storage
    if "://" in url:
        storage = optuna.storages.RDBStorage(url)
    else:
        from optuna.storages.journal import JournalFileOpenLock

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        # The open-lock works on shared file systems (NFS) where symlink locks may not.
        storage = optuna.storages.JournalStorage(_JournalFile(url, lock_obj=JournalFileOpenLock(url)))
    _STORAGES[url] = storage
    return storage


@dataclass
class SearcherFactory:
    """Builds the per-study searcher (picklable: plain settings). ``build(spec, resume)``."""

    sweep_id: str
    space: Any  # SearchSpaceConfig
    metrics: list[str]
    modes: list[str]
    sampler: str
    seed: int
    population_size: int
    startup_trials: int
    constraints: list[dict[str, Any]]
    initial_points: list[dict[str, Any]]
    storage_url: str
    # search.engine.gate.SweepGate: constraints and latency decided before a slot (None: in trials)
    gate: Any = None

    def study_name(self, spec: StudySpec) -> str:
        return f"{self.sweep_id}-{spec.name}"

    def build(self, spec: StudySpec, resume: bool) -> Any:
        from search.engine.samplers import TruthfulOptunaSearch
        from search.engine.space import SearchSpace

        # The searcher re-encodes the space for its sampler (flat for NSGA-II/GP, conditional with
        # TPE's group decomposition; search.engine.samplers.encoding_for), as make_searcher does.
        searcher: Any = TruthfulOptunaSearch(
            space=SearchSpace(self.space),
            metric=list(self.metrics),
            mode=list(self.modes),
            sampler=self.make_sampler(self.seed + spec.index),  # distinct but reproducible per study
            study_name=self.study_name(spec),
            storage=optuna_storage(self.storage_url),
            # Initial points were enqueued in the storage when the study was created: once only.
            points_to_evaluate=None if resume else ([dict(p) for p in self.initial_points] or None),
            constraint_metrics=[c["metric"] for c in self.constraints],
        )
        # Seeded per study and by how many trials its storage holds: reproducible, and a resumed
        # study does not replay the random draws (startup trials) it made before the restart.
        done = len(searcher._ot_study.get_trials(deepcopy=False)) if resume else 0
        if done:
            sampler = self.make_sampler(self.seed + spec.index + 1_000_003 * done)
            searcher._ot_study.sampler = sampler
            searcher._sampler = sampler
        if self.gate is not None:
            self.gate.apply(searcher, spec.name)
        return searcher

    def make_sampler(self, seed: int) -> Any:
        from search.engine.samplers import make_sampler

        return make_sampler(
            self.sampler,
            seed,
            self.constraints,
            population_size=self.population_size,
            startup_trials=self.startup_trials,
        )


def fair_pick(remaining: Mapping[str, int], running: Mapping[str, int], concurrency: int) -> str | None:
    """The study to start a trial of: the one furthest below its share ``concurrency * r_i / sum r``
    of the running trials (``r``: trials not started yet); ties go to the study running fewer
    trials, then to the larger remaining budget, then to the name. None when no study has trials
    left."""
    total = sum(v for v in remaining.values() if v > 0)
    if total <= 0:
        return None
    best, best_key = None, None
    for name, r in sorted(remaining.items()):  # by name: the first of exact ties wins
        if r <= 0:
            continue
        run = running.get(name, 0)
        key = (round(concurrency * r / total - run, 9), -run, r)
        if best_key is None or key > best_key:
            best, best_key = name, key
    return best


class StudyMux(Searcher):
    """One Tune searcher over many studies (see module docstring)."""

    CKPT_FILE_TMPL = "searcher-state-{}.pkl"

    def __init__(
        self,
        specs: Sequence[StudySpec],
        factory: SearcherFactory | Callable[[StudySpec, bool], Any],
        *,
        concurrency: int,
        total_trials: int | None = None,
        metric: list[str] | None = None,
        mode: list[str] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)  # type: ignore[arg-type]  # multi-objective lists
        self.specs = {s.name: s for s in specs}
        self.factory = factory
        self.concurrency = max(1, int(concurrency))
        self.total_trials = total_trials
        self.started: dict[str, int] = {s.name: 0 for s in specs}  # trials suggested per study
        self.owner: dict[str, str] = {}  # tune trial id -> study
        self.live: dict[str, set[str]] = {s.name: set() for s in specs}
        self.exhausted: set[str] = set()  # studies whose searcher said FINISHED
        self.events = 0  # calls handled and the seconds spent in them (driver overhead)
        self.seconds = 0.0
        self._searchers: dict[str, Any] = {}
        self._resumed = False
        # Where save_to_dir keeps complete copies of Tune's experiment snapshots (set by the runner).
        self.snapshot_backup: str | None = None

    # -------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_searchers"] = {}  # Optuna studies live in their storage, not in this pickle
        state["_bindings"] = self._bindings()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        bindings = state.pop("_bindings", {})
        self.__dict__.update(state)
        self._pending_bindings = bindings

    def _bindings(self) -> dict[str, dict[str, Any]]:
        """Per study: Tune trial id -> Optuna storage trial id, completed trials, told states."""
        out: dict[str, dict[str, Any]] = {}
        for name, s in self._searchers.items():
            out[name] = {
                "trials": {tid: t._trial_id for tid, t in s._ot_trials.items()},
                "completed": sorted(s._completed_trials),
                "told": dict(getattr(s, "told", {})),
            }
        pending = getattr(self, "_pending_bindings", {})
        for name, b in pending.items():  # studies not touched since the last restore
            out.setdefault(name, b)
        return out

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__getstate__(), fh)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune calls this right after writing its experiment snapshot into ``checkpoint_dir``: a
        complete copy of that snapshot is kept first (:mod:`search.engine.experiment_state`)."""
        backup = getattr(self, "snapshot_backup", None)
        if backup:
            from search.engine.experiment_state import keep_snapshots

            keep_snapshots(checkpoint_dir, backup)
        super().save_to_dir(checkpoint_dir, session_str)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self.__setstate__(state)
        self._searchers = {}
        self._resumed = True

    # ------------------------------------------------------------------------------ searchers
    def study_searcher(self, name: str) -> Any:
        s = self._searchers.get(name)
        if s is not None:
            return s
        spec = self.specs[name]
        build = self.factory.build if isinstance(self.factory, SearcherFactory) else self.factory
        pending = getattr(self, "_pending_bindings", {}).pop(name, None)
        s = build(spec, self._resumed or pending is not None)
        if pending is not None:
            self._rebind(s, pending)
        self._searchers[name] = s
        return s

    @staticmethod
    def _rebind(s: Any, b: dict[str, Any]) -> None:
        study = s._ot_study
        # Only trials the storage holds (a machine crash may have cut the journal's tail; their
        # Tune trials are then told nothing and the storage never shows them).
        have = {t._trial_id for t in study.get_trials(deepcopy=False)}
        s._ot_trials = {
            tid: optuna.trial.Trial(study, ot_id) for tid, ot_id in b["trials"].items() if ot_id in have
        }
        s._completed_trials = set(b["completed"])
        if hasattr(s, "told"):
            s.told.update(b["told"])

    def resolve_orphans(self, known_trial_ids: set[str]) -> int:
        """After a restore: Optuna trials still RUNNING in the storage that belong to no Tune trial
        the restored experiment knows are told FAIL (their driver died before Tune recorded them).
        Returns how many were closed."""
        closed = 0
        for name in self.specs:
            s = self.study_searcher(name)
            study = s._ot_study
            mine = {t._trial_id for tid, t in s._ot_trials.items() if tid in known_trial_ids}
            for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if ft._trial_id not in mine:
                    study.tell(ft.number, state=TrialState.FAIL)
                    closed += 1
            s._ot_trials = {tid: t for tid, t in s._ot_trials.items() if tid in known_trial_ids}
        return closed

    # ---------------------------------------------------------------------------------- Tune
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # objectives come from the study searchers

    def remaining(self) -> dict[str, int]:
        return {
            n: (0 if n in self.exhausted else max(0, s.trials - self.started[n]))
            for n, s in self.specs.items()
        }

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        # (Tune's Searcher.suggest may return Searcher.FINISHED, a str, though its stub says dict.)
        t0 = time.perf_counter()
        try:
            return self._suggest(trial_id)
        finally:
            self.events += 1
            self.seconds += time.perf_counter() - t0

    def _suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.total_trials is not None and sum(self.started.values()) >= self.total_trials:
            return Searcher.FINISHED
        running = {n: len(v) for n, v in self.live.items()}
        while True:
            name = fair_pick(self.remaining(), running, self.concurrency)
            if name is None:
                return Searcher.FINISHED
            searcher = self.study_searcher(name)
            cfg = searcher.suggest(trial_id)
            if cfg == Searcher.FINISHED:
                self.exhausted.add(name)
                continue
            if cfg is None:
                return None
            ot_trial = getattr(searcher, "_ot_trials", {}).get(trial_id)
            if ot_trial is not None:  # the journal then maps its trials to the store's rows
                ot_trial.set_user_attr("tune_trial_id", trial_id)
            self.started[name] += 1
            self.owner[trial_id] = name
            self.live[name].add(trial_id)
            # study_trial: the trial's 1-based number within its study (the store's trial_number).
            return {**cfg, STUDY_KEY: name, "study_trial": self.started[name]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        name = self.owner.get(trial_id)
        if name is not None:
            self.study_searcher(name).on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        t0 = time.perf_counter()
        name = self.owner.get(trial_id)
        if name is not None:
            self.live[name].discard(trial_id)
            self.study_searcher(name).on_trial_complete(trial_id, result=result, error=error)
        self.events += 1
        self.seconds += time.perf_counter() - t0

    def told(self) -> dict[str, str]:
        """trial id -> the Optuna state it was told with (every study)."""
        out: dict[str, str] = {}
        for name in self.specs:
            out.update(getattr(self.study_searcher(name), "told", {}))
        return out


class StudyScheduler(FIFOScheduler):
    """Routes each trial's results to its study's own scheduler (FIFO where a study has none)."""

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = dict(schedulers)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        sched = self.schedulers.get(str(trial.config.get(STUDY_KEY)))
        if sched is None:
            return TrialScheduler.CONTINUE
        return str(sched.on_trial_result(tune_controller, trial, result))

    def debug_string(self) -> str:
        return "; ".join(f"{n}: {s.debug_string()}" for n, s in sorted(self.schedulers.items()))


class StudyCallbacks(Callback):
    """Routes Tune's trial events to the callbacks of the trial's study; times them."""

    def __init__(self, per_study: Mapping[str, Sequence[Callback]]) -> None:
        self.per_study = {k: list(v) for k, v in per_study.items()}
        self.events = 0
        self.seconds = 0.0

    def _each(self, trial: Trial) -> list[Callback]:
        return self.per_study.get(str(trial.config.get(STUDY_KEY)), [])

    def _call(self, hook: str, trial: Trial, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            for cb in self._each(trial):
                getattr(cb, hook)(*args, trial=trial, **kwargs)
        finally:
            self.events += 1
            self.seconds += time.perf_counter() - t0

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_start", trial, iteration, trials, **info)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self._call("on_trial_result", trial, iteration, trials, result=result, **info)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_complete", trial, iteration, trials, **info)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_error", trial, iteration, trials, **info)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for cbs in self.per_study.values():
            for cb in cbs:
                cb.on_experiment_end(trials, **info)


def run_study_trial(config: dict[str, Any], contexts: Mapping[str, Any]) -> None:
    """The Tune trainable of a multi-study run: the trial's study context, then the usual trial."""
    from search.engine.trainable import run_tune_trial

    run_tune_trial(config, contexts[str(config[STUDY_KEY])])
