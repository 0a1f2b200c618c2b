"""Where a running or finished sweep stands (``peftsweep status OUT``), from its store alone.

Per study: trials by state, the front so far and its hypervolume, the best value of every
objective, elapsed time and an ETA. The live progress display of a sweep
(:mod:`search.engine.progress`) shows the same numbers, computed here, while it runs.

Numbers only: :func:`sweep_status` reads ``sweep.yaml``/``sweep.json`` and the store's trial
table (one Parquet read) and returns a :class:`SweepStatus`; :func:`format_status` turns it into
text and :meth:`SweepStatus.to_json` into JSON.

- A study is a group of trials with one front: the store's ``study`` column where there is one
  (multi-study sweeps), else ``domain``. Its budget: the config's trials of that study
  (``SweepConfig.studies()`` where the config has studies, else ``budget.trials`` per domain).
- Finished = every state but ``running``. The front and hypervolume are those of
  :func:`search.results.pareto.compute_front` over completed feasible trials; while a study runs,
  an objective without a configured ``ref`` takes its reference point from the trials so far, so
  the hypervolume can move when a new trial widens the observed range (``reference_point`` says
  which point was used).
- Elapsed: from the study's first trial start to now (to its last trial end once finished).
  ETA: elapsed / finished x (budget - finished), the mean rate so far with the sweep's
  concurrency in it; a study not started yet is estimated at the mean seconds per trial of the
  started ones; None when no trial has finished anywhere. A study is finished when it reached its
  budget, or when the sweep wrote ``fronts.json`` after its last store write (a time budget or an
  exhausted space can end a study early).
- ``running`` rows of a driver that was killed stay ``running`` until ``peftsweep resume``
  reconciles them: ``last_update`` (the store's modification time) tells a stalled sweep from a
  live one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.config import SweepConfig
from search.results.pareto import compute_front
from search.results.store import ResultStore

__all__ = [
    "REJECTED_PREFIX",
    "STATES",
    "StudyStatus",
    "SweepStatus",
    "study_column",
    "study_budgets",
    "study_status",
    "sweep_status",
    "training_compute",
    "compute_lines",
    "format_status",
]

# The stop_reason of a point the searcher's gate rejected before training (search.engine.gate).
REJECTED_PREFIX = "rejected before training: "
# Trial states in display order ("running" is the only unfinished one).
STATES = ("completed", "running", "pruned", "infeasible", "failed")
_FRONT_PARAMS = ("method", "lora_rank", "lora_alpha", "adapter_repetitions", "adapter_reduction", "lr")


def study_column(trials: pd.DataFrame) -> str:
    """The column that names a trial's study: ``study`` when the store has one, else ``domain``."""
    return "study" if "study" in trials.columns and trials["study"].notna().any() else "domain"


def study_budgets(config: SweepConfig) -> dict[str, int]:
    """Study name -> its trial budget, in the config's order."""
    studies = getattr(config, "studies", None)
    if callable(studies):  # multi-study configs: (model, domain) pairs with their own budgets
        return {str(s.name): int(s.trials) for s in studies()}
    return {d.name: int(config.budget.trials) for d in config.domains}


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


@dataclass
class StudyStatus:
    """One study's state (see the module docstring for every rule)."""

    study: str
    budget: int
    counts: dict[str, int]  # trials by state, every state of STATES present
    objectives: list[str]
    modes: list[str]
    reference_point: list[float]
    hypervolume: float
    front: list[dict[str, Any]]  # trial id, parameters and objectives of each non-dominated trial
    best: dict[str, float | None]  # best value of each objective over completed feasible trials
    started_at: float | None
    finished_at: float | None  # last trial end (None while nothing finished)
    elapsed_s: float
    eta_s: float | None
    state: str  # "waiting" | "running" | "finished" | "stopped" (no trial running, budget not reached)
    rejected: int = 0  # points rejected before training (no slot, not in the budget, not in counts)
    # Finished trained trials (completed, stopped, failed): iterations trained, and what their own
    # schedules asked for (the compute without early stopping); 0 when the store lacks the columns.
    iterations_trained: int = 0
    iterations_scheduled: int = 0

    @property
    def compute_saved(self) -> float:
        """Iterations the finished trials' schedules asked for / iterations trained (1.0: nothing
        stopped early; NaN: nothing finished)."""
        if self.iterations_trained <= 0:
            return math.nan
        return self.iterations_scheduled / self.iterations_trained

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.counts.items() if s != "running")

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "state": self.state,
            "budget": self.budget,
            "finished": self.finished,
            "counts": dict(self.counts),
            "objectives": list(self.objectives),
            "modes": list(self.modes),
            "reference_point": list(self.reference_point),
            "hypervolume": self.hypervolume,
            "front_size": len(self.front),
            "front": self.front,
            "best": dict(self.best),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": self.elapsed_s,
            "eta_s": self.eta_s,
            "rejected_before_training": self.rejected,
            "iterations_trained": self.iterations_trained,
            "iterations_scheduled": self.iterations_scheduled,
            "compute_saved": _plain(self.compute_saved),
        }


@dataclass
class SweepStatus:
    sweep_id: str
    output_dir: str
    created: float | None
    state: str  # "finished" | "in progress"
    last_update: float | None  # the store's modification time
    elapsed_s: float
    eta_s: float | None
    studies: list[StudyStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "output_dir": self.output_dir,
            "state": self.state,
            "created": self.created,
            "last_update": self.last_update,
            "elapsed_s": self.elapsed_s,
            "eta_s": self.eta_s,
            "studies": [s.to_json() for s in self.studies],
        }


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series([], dtype=float)


def training_compute(rows: pd.DataFrame) -> tuple[int, int]:
    """(iterations trained, iterations scheduled) over the finished trained rows (completed,
    pruned = stopped by MO-ASHA, failed) that record both ``iterations_done`` and ``iterations``:
    their ratio is what early stopping saved. Rejected and infeasible points trained nothing."""
    if not len(rows) or "status" not in rows or "iterations_done" not in rows or "iterations" not in rows:
        return 0, 0
    trained = rows[rows["status"].astype(str).isin(("completed", "pruned", "failed"))]
    done, sched = _num(trained, "iterations_done"), _num(trained, "iterations")
    ok = done.notna() & sched.notna()
    return int(done[ok].sum()), int(sched[ok].sum())


def study_status(
    study: str,
    rows: pd.DataFrame,
    config: SweepConfig,
    *,
    now: float,
    budget: int | None = None,
    sweep_finished: bool = False,
) -> StudyStatus:
    """The status of one study from its store rows (a pure function of its inputs)."""
    budget = int(config.budget.trials if budget is None else budget)
    # Points the pre-slot gate rejected (search.engine.gate) took no slot and are not in the budget:
    # counted apart, never as finished trials.
    gate = (
        rows["stop_reason"].astype(str).str.startswith(REJECTED_PREFIX).to_numpy()
        if "stop_reason" in rows and len(rows)
        else np.zeros(len(rows), dtype=bool)
    )
    rejected = int(gate.sum())
    rows = rows[~gate] if rejected else rows
    status = rows["status"].astype(str) if "status" in rows and len(rows) else pd.Series([], dtype=str)
    counts = {s: int((status == s).sum()) for s in STATES}
    for s in sorted(set(status) - set(STATES)):  # a state this version does not know: still counted
        counts[s] = int((status == s).sum())
    fr = compute_front(
        rows,
        config.metric_names,
        config.modes,
        [o.ref for o in config.objectives],
        config.constraints,
        domain=study,
    )
    front = []
    for rec in fr.front.to_dict(orient="records"):
        item = {k: _plain(rec.get(k)) for k in ("trial_id", *_FRONT_PARAMS, *fr.objectives)}
        front.append({k: v for k, v in item.items() if v is not None})
    best: dict[str, float | None] = {}
    for name, mode in zip(fr.objectives, fr.modes):
        col = _num(fr.front, name).dropna()
        best[name] = None if col.empty else float(col.max() if mode == "max" else col.min())
    starts, ends = _num(rows, "started_at").dropna(), _num(rows, "finished_at").dropna()
    finished = sum(n for s, n in counts.items() if s != "running")
    started_at = float(starts.min()) if len(starts) else None
    finished_at = float(ends.max()) if len(ends) else None
    if started_at is None and finished_at is not None:  # rows written without a start time
        started_at = float(ends.min())
    if counts["running"]:
        state = "running"
    elif finished >= budget or (sweep_finished and finished):
        state = "finished"
    elif finished:
        state = "stopped"
    else:
        state = "waiting"
    end = finished_at if state == "finished" and finished_at is not None else now
    elapsed = max(0.0, end - started_at) if started_at is not None else 0.0
    if state == "finished":
        eta: float | None = 0.0
    elif finished and elapsed > 0:
        eta = elapsed / finished * max(budget - finished, 0)
    else:
        eta = None
    trained_it, scheduled_it = training_compute(rows)
    return StudyStatus(
        study=study,
        budget=budget,
        counts=counts,
        objectives=list(fr.objectives),
        modes=list(fr.modes),
        reference_point=[float(r) for r in fr.ref],
        hypervolume=float(fr.hypervolume),
        front=front,
        best=best,
        started_at=started_at,
        finished_at=finished_at,
        elapsed_s=elapsed,
        eta_s=eta,
        state=state,
        rejected=rejected,
        iterations_trained=trained_it,
        iterations_scheduled=scheduled_it,
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def sweep_status(out: str | os.PathLike[str], *, now: float | None = None) -> SweepStatus:
    """Status of the sweep in output folder ``out`` (running or finished). Raises UserError when
    ``out`` is not a sweep folder (from :func:`search.results.sweep_files.load_sweep`)."""
    from search.results.sweep_files import load_sweep, store_root_of

    o = Path(out)
    config, meta = load_sweep(o)
    now = time.time() if now is None else now
    root = store_root_of(o)  # where the config put the store (a path or URI), else OUT/results
    trials = ResultStore(root).trials()
    last_update = _mtime(Path(root) / ResultStore.TRIALS)  # None for a remote store
    fronts_at = _mtime(o / "fronts.json")
    sweep_finished = fronts_at is not None and (last_update is None or fronts_at >= last_update)
    col = study_column(trials)
    budgets = study_budgets(config)
    names = list(budgets)
    names += [str(s) for s in trials[col].dropna().unique() if str(s) not in names] if len(trials) else []
    studies = [
        study_status(
            name,
            trials[trials[col] == name] if len(trials) else trials,
            config,
            now=now,
            budget=budgets.get(name),
            sweep_finished=sweep_finished,
        )
        for name in names
    ]
    # ETA of the sweep: what the started studies still need plus, for a study not started yet,
    # its budget at the mean seconds per finished trial of the others (studies run one after another).
    done = [s for s in studies if s.finished and s.elapsed_s > 0]
    per_trial = sum(s.elapsed_s for s in done) / sum(s.finished for s in done) if done else None
    eta: float | None = 0.0
    for s in studies:
        if s.state == "finished":
            continue
        if s.eta_s is not None:
            eta = (eta or 0.0) + s.eta_s
        elif per_trial is not None:
            eta = (eta or 0.0) + per_trial * (s.budget - s.finished)
        else:
            eta = None
            break
    created = meta.get("created")
    created_f = float(created) if isinstance(created, int | float) else None
    finished = all(s.state == "finished" for s in studies) and bool(studies)
    end = max((s.finished_at or 0.0) for s in studies) if finished else now
    elapsed = max(0.0, end - created_f) if created_f is not None else sum(s.elapsed_s for s in studies)
    return SweepStatus(
        sweep_id=str(meta.get("sweep_id", "")),
        output_dir=str(o.resolve()),
        created=created_f,
        state="finished" if finished else "in progress",
        last_update=last_update,
        elapsed_s=elapsed,
        eta_s=0.0 if finished else eta,
        studies=studies,
    )


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def compute_lines(s: StudyStatus) -> list[str]:
    """What early stopping and the pre-slot gate did in a study, as text (empty when nothing
    finished)."""
    if s.iterations_trained <= 0:
        return []
    trained = sum(s.counts.get(k, 0) for k in ("completed", "pruned", "failed"))
    text = (
        f"compute: {s.iterations_trained} of {s.iterations_scheduled} scheduled iterations trained "
        f"({s.compute_saved:.2f}x saved); {s.counts.get('pruned', 0)} of {trained} trained trials "
        "stopped early by MO-ASHA"
    )
    if s.rejected:
        text += f"; {s.rejected} points rejected before training (no slot)"
    return [text]


def format_status(status: SweepStatus, *, now: float | None = None) -> str:
    """Human-readable status: one block per study."""
    from models.progress import format_duration

    now = time.time() if now is None else now
    lines = [
        f"sweep {status.sweep_id} ({status.state}): elapsed {format_duration(status.elapsed_s)}, "
        f"eta {format_duration(status.eta_s)}"
        + (
            f"; store last written {format_duration(now - status.last_update)} ago"
            if status.last_update is not None
            else "; no trial written yet"
        )
    ]
    for s in status.studies:
        counts = ", ".join(f"{n} {state}" for state, n in s.counts.items())
        best = ", ".join(f"{k}={_fmt(v)}" for k, v in s.best.items() if v is not None) or "-"
        lines.append(
            f"== study {s.study} ({s.state}): {s.finished}/{s.budget} finished ({counts}); "
            f"elapsed {format_duration(s.elapsed_s)}, eta {format_duration(s.eta_s)}"
        )
        ref = ", ".join(f"{n}={r:.4g}" for n, r in zip(s.objectives, s.reference_point))
        lines.append(
            f"   front: {len(s.front)} trial(s), hypervolume {s.hypervolume:.5g} (ref: {ref}); best {best}"
        )
        lines.extend(f"   {line}" for line in compute_lines(s))
        for rec in s.front:
            lines.append("     " + " ".join(f"{k}={_fmt(v)}" for k, v in rec.items()))
    return "\n".join(lines)
