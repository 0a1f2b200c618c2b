"""Live progress of a sweep: one row per study with trials finished / running / pruned / infeasible /
failed, the best front so far and an ETA; and Ray Tune's own banners kept off the terminal.

:class:`SweepProgress` (driver side) owns the display (:class:`models.progress.Progress`: a bar
on a terminal, plain lines otherwise, nothing with ``--quiet``). Its numbers are those of
``peftsweep status`` (:func:`search.results.status.study_status` over the store's rows), read
again whenever a trial starts or ends, so what the bar shows is what the store holds.

:class:`ProgressCallback` is the Tune callback that feeds it. Tune pickles callbacks with the
experiment (a resumed sweep gets back the callbacks of the first run), so the callback holds only
the sweep id and the study name and finds the live display in this module's registry
(:func:`activate`); a restored callback with nothing registered shows nothing.

Why it subclasses Tune's ``experimental.output.ProgressReporter``: Tune prints the "View detailed
results here" and "To visualize your results with TensorBoard" banner through the first callback
of that type (and adds its own one otherwise), even at ``verbose=0``. Being that callback, this one
gets ``experiment_started`` and Tune's periodic ``print_heartbeat`` calls and prints neither banner
nor Tune's heartbeat table.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.experimental.output import AirVerbosity
from ray.tune.experimental.output import ProgressReporter as _TuneReporter

from search.config import SweepConfig
from search.results.status import StudyStatus, study_budgets, study_column, study_status
from search.results.store import ResultStore

__all__ = [
    "SweepProgress",
    "ProgressCallback",
    "activate",
    "deactivate",
    "study_line",
    "quiet_libraries",
    "start_display",
]

# Loggers whose INFO/WARNING lines a --quiet sweep must not print: Ray's start-up ("Started a local
# Ray instance", the token-auth notice), Tune's ("Wrote the latest version of all result files").
# ray.init resets the level of the "ray" logger itself, not of these children, so setting them
# holds through it.
_RAY_LOGGERS = ("ray._private", "ray.tune", "ray.train", "ray.air", "ray.util")


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


def study_line(st: StudyStatus) -> str:
    """The free-text part of a study's row: states, then the front so far."""
    c = st.counts
    states = (
        f"{c.get('running', 0)} running, {c.get('completed', 0)} completed, {c.get('pruned', 0)} pruned, "
        f"{c.get('infeasible', 0)} infeasible, {c.get('failed', 0)} failed"
    )
    best = " ".join(f"{k}={_num(v)}" for k, v in st.best.items())
    front = f"front {len(st.front)} HV {st.hypervolume:.4g}" + (f" best {best}" if st.front else "")
    return f"{states} | {front}"


@contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """With ``quiet``: Ray's and Optuna's log lines below ERROR and Tune's UserWarnings are not
    printed while the block runs (levels and filters restored after); without it, nothing changes."""
    if not quiet:
        yield
        return
    import optuna

    levels = {name: logging.getLogger(name).level for name in _RAY_LOGGERS}
    optuna_level = optuna.logging.get_verbosity()
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        optuna.logging.set_verbosity(optuna_level)


class SweepProgress:
    """The live display of one sweep in the driver process (see the module docstring)."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        config: SweepConfig,
        sweep_id: str,
        mode: str = "auto",
        min_interval: float = 1.0,
    ):
        from models.progress import Progress

        self.out = Path(out)
        self.config = config
        self.sweep_id = sweep_id
        self.display = Progress(mode)
        self.budgets = study_budgets(config)
        # config.results: a store elsewhere (path or URI), where the sweep config names one
        self.store_root = str(getattr(config, "results", None) or self.out / "results")
        self.min_interval = min_interval
        self._last: dict[str, float] = {}  # study -> when its row last read the store
        self._stale: set[str] = set()  # studies with events since that read

    def refresh(self, study: str, *, force: bool = False) -> StudyStatus | None:
        """Re-read the study's rows from the store and update its row; returns the status shown.

        At most once per ``min_interval`` seconds per study unless ``force``: a read (the whole
        store, then the front and its hypervolume) costs more as the sweep grows, and the driver
        calls this on every trial start and end. A skipped refresh is made up by the next
        heartbeat (:meth:`tick`)."""

        if self.display.mode == "off":
            return None
        now = time.monotonic()
        if not force and now - self._last.get(study, -math.inf) < self.min_interval:
            self._stale.add(study)
            return None
        self._last[study] = now
        self._stale.discard(study)
        trials = ResultStore(self.store_root).trials()
        col = study_column(trials) if len(trials) else "domain"
        rows = trials[trials[col] == study] if len(trials) else trials
        st = study_status(study, rows, self.config, now=time.time(), budget=self.budgets.get(study))
        if study not in self.display:
            # finished trials of an earlier run (resume) count as done but not in this run's rate
            self.display.add(study, f"study {study}", total=st.budget, completed=st.finished)
        self.display.update(study, completed=st.finished, total=st.budget, info=study_line(st), force=force)
        return st

    def tick(self, study: str) -> None:
        """A heartbeat: lets the plain-lines display print its periodic line; reads the store only
        for a study whose last refresh was skipped."""
        if study in self._stale:
            with contextlib.suppress(Exception):  # a display problem must never stop a sweep
                if self.refresh(study) is not None:
                    return
        if study in self.display:
            self.display.update(study)

    def close(self) -> None:
        self.display.close()


# One display per sweep running in this (driver) process; the callbacks find it here.
_ACTIVE: dict[str, SweepProgress] = {}


def activate(progress: SweepProgress) -> None:
    _ACTIVE[progress.sweep_id] = progress


def deactivate(sweep_id: str) -> None:
    p = _ACTIVE.pop(sweep_id, None)
    if p is not None:
        p.close()


class ProgressCallback(_TuneReporter):
    """Forwards Tune's trial events to the sweep's :class:`SweepProgress`; silences Tune's
    experiment banner and heartbeat table (see the module docstring).

    ``study``: the study of every trial of this experiment (one experiment per study); None when
    one experiment runs several studies and a trial's config names its own (``study`` key)."""

    def __init__(self, sweep_id: str, study: str | None = None) -> None:
        super().__init__(AirVerbosity.SILENT)
        self.sweep_id = sweep_id
        self.study = study

    def _studies(self, trial: Trial | None) -> list[str]:
        if self.study is not None:
            return [self.study]
        if trial is not None and trial.config.get("study") is not None:
            return [str(trial.config["study"])]
        p = _ACTIVE.get(self.sweep_id)
        return list(p.budgets) if p is not None else []

    def _refresh(self, trial: Trial | None = None, force: bool = False) -> None:
        p = _ACTIVE.get(self.sweep_id)
        if p is not None:
            for study in self._studies(trial):
                # a display problem must never stop a sweep
                with contextlib.suppress(Exception):
                    p.refresh(study, force=force)

    # Tune's reporter interface: no banner, no heartbeat table; our own rows instead.
    def experiment_started(self, *args: Any, **kwargs: Any) -> None:
        self._refresh(force=True)

    def print_heartbeat(self, trials: list[Trial], *args: Any, force: bool = False) -> None:
        p = _ACTIVE.get(self.sweep_id)
        if p is not None:
            for study in self._studies(None):
                p.tick(study)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        pass  # intermediate results change no count (and Tune's reporter would print a table)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._refresh(trial)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._refresh(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._refresh(trial)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        # Tune's reporter would print (and, set up without a start time, crash) on a retried trial.
        self._refresh(trial)

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        # Tune's reporter compares against a class-level None here and raises; Tune calls
        # callbacks *before* registering the checkpoint, so that error silently dropped every
        # checkpoint and a retried trial restarted from iteration 0.
        pass

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._refresh(None, force=True)


def start_display(
    out: str | os.PathLike[str], config: SweepConfig, sweep_id: str, quiet: bool
) -> Callable[[], None]:
    """For the runner: show the sweep's progress rows (none with ``quiet``, and then Ray's and
    Optuna's log lines off too) until the returned function is called (it prints the final rows)."""
    stack = ExitStack()
    stack.enter_context(quiet_libraries(quiet))
    activate(SweepProgress(out, config, sweep_id, "off" if quiet else "auto"))
    stack.callback(deactivate, sweep_id)
    return stack.close
