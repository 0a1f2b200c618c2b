"""Weights & Biases logging of a sweep: live while trials run, completed from the store at the end.

Runs written (all in ``group=<sweep id>``):

- one ``job_type="trial"`` run per trial (``id=<sweep id>-<trial id>``, ``name=<trial id>``):
  config = the trial's search parameters and domain; history = AP and loss at each intermediate
  report (``step`` = training iteration), logged as the trial reports them; summary = the trial's
  final store row (status, stop reason, metrics, timings, node);
- one ``job_type="summary"`` run: while the sweep runs, after every finished trial, the domain's
  current hypervolume, front size and trials finished (``live/...``); at the end the Pareto table
  of every domain, the hypervolume after each finished trial with the final reference point
  (``hypervolume_over_trials/<domain>``) and the report's scatter PNGs.

Live logging is a Tune callback (``search.engine.callbacks.WandbCallback``) that runs in the driver
and forwards to the sweep's :class:`SweepLogger`. Nothing is lost when the driver dies:
``<out>/wandb/logged.json`` lists the trials whose runs were finished, and
:meth:`SweepLogger.finish` (end of ``run`` or ``resume``) writes the run of every stored trial
missing from it, history from the intermediate table. :func:`log_sweep` does only that from-the-
store pass (``peftsweep report OUT --wandb``: a sweep run without W&B, or one whose W&B logging
failed). A W&B error during the sweep (no network, bad key) never stops the sweep: it is reported
once and live logging stops; at the sweep's end one more attempt writes what is missing from the
store, and if that fails too the ledger still says which runs are left for ``report --wandb``.

Mode: ``auto`` -> online when ``WANDB_API_KEY`` is set, else offline (files under ``<out>/wandb``;
``wandb sync`` uploads them later). Secrets are never logged: only search parameters and metrics are
sent, and any key that looks like a credential is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from search.config import KNOWN_METRICS, PARAM_COLUMNS, SweepConfig
from search.results.pareto import FrontResult, hypervolume_history
from search.results.status import study_column

__all__ = [
    "SweepLogger",
    "activate",
    "deactivate",
    "active_logger",
    "stop_live_logging",
    "log_sweep",
    "resolve_mode",
    "scrub",
]

logger = logging.getLogger(__name__)

_SECRET_HINTS = ("key", "token", "secret", "password", "passwd", "credential", "auth")
_SUMMARY_COLS = (
    "status",
    "stop_reason",
    *KNOWN_METRICS,
    "iterations_done",
    "train_seconds",
    "wall_seconds",
    "device",
    "node",
)
# Run ids may be at most 128 characters; sweep ids are short, but keep a margin.
_MAX_ID = 120


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def scrub(d: dict[str, Any]) -> dict[str, Any]:
    """Drop credential-looking keys and null/NaN values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if any(h in k.lower() for h in _SECRET_HINTS):
            continue
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


class SweepLogger:
    """The W&B side of one sweep (driver process only): trial runs, the summary run, the ledger."""

    def __init__(self, out: str | os.PathLike[str], config: SweepConfig, sweep_id: str) -> None:
        import wandb

        self.out = Path(out)
        self.config = config
        self.sweep_id = sweep_id
        self.mode = resolve_mode(config.wandb.mode)
        # the store where the config put it (a path or URI), else OUT/results: as the engine writes it
        self.store_root = str(config.results or self.out / "results")
        self.dir = self.out / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ledger_path = self.dir / "logged.json"
        self.logged: set[str] = (
            set(json.loads(self._ledger_path.read_text())) if self._ledger_path.exists() else set()
        )
        self._runs: dict[str, Any] = {}  # trial id -> open trial run
        self._summary: Any = None
        self.failed = (
            False  # set when a W&B error stopped live logging (see search.engine.callbacks.WandbCallback)
        )
        self._settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def _init(self, run_id: str, name: str, job_type: str, config: dict[str, Any]) -> Any:
        import wandb

        return wandb.init(
            project=self.config.wandb.project,
            entity=self.config.wandb.entity,
            group=self.sweep_id,
            mode=self.mode,  # type: ignore[arg-type]  # resolve_mode returns one of wandb's modes
            dir=str(self.dir),
            reinit="create_new",
            id=run_id[-_MAX_ID:],
            name=name,
            job_type=job_type,
            config=config,
            resume="allow",
            settings=self._settings,
        )

    def _trial_run(self, trial_id: str, params: dict[str, Any], domain: str) -> Any:
        run = self._runs.get(trial_id)
        if run is None:
            cfg = scrub(
                {k: params.get(k) for k in PARAM_COLUMNS} | {"domain": domain, "sweep_id": self.sweep_id}
            )
            run = self._init(f"{self.sweep_id}-{trial_id}", trial_id, "trial", cfg)
            self._runs[trial_id] = run
        return run

    def _save_ledger(self) -> None:
        from models.data.coco import atomic_write_json

        atomic_write_json(self._ledger_path, sorted(self.logged))

    # ------------------------------------------------------------------ live (Tune callback)
    def trial_started(self, trial_id: str, params: dict[str, Any], domain: str) -> None:
        if self.enabled and trial_id not in self.logged:
            self._trial_run(trial_id, params, domain)

    def trial_reported(
        self, trial_id: str, params: dict[str, Any], domain: str, result: dict[str, Any]
    ) -> None:
        if not self.enabled or trial_id in self.logged or result.get("iteration") is None:
            return
        run = self._trial_run(trial_id, params, domain)
        run.log(scrub({"ap": result.get("ap"), "loss": result.get("loss")}), step=int(result["iteration"]))

    def trial_finished(self, trial_id: str, params: dict[str, Any], domain: str) -> None:
        """Close the trial's run with its store row (written by StoreCallback just before) as summary;
        log the domain's live front."""
        from search.results.store import ResultStore

        if not self.enabled or trial_id in self.logged:
            return
        trials = ResultStore(self.store_root).trials()
        mine = trials[trials["domain"] == domain] if len(trials) else trials
        rows = mine[mine["trial_id"] == trial_id] if len(mine) else mine
        row = rows.iloc[-1].to_dict() if len(rows) else {"status": "unknown"}
        self._close_trial(trial_id, self._trial_run(trial_id, params, domain), row)
        self._log_live_front(domain, mine)

    def _close_trial(self, trial_id: str, run: Any, row: dict[str, Any]) -> None:
        for k, v in scrub({c: row.get(c) for c in _SUMMARY_COLS}).items():
            run.summary[k] = v
        run.finish(exit_code=1 if row.get("status") == "failed" else 0)
        self._runs.pop(trial_id, None)
        self.logged.add(trial_id)
        self._save_ledger()

    def _summary_run(self) -> Any:
        if self._summary is None:
            c = self.config
            cfg = scrub(
                {
                    "objectives": ",".join(c.metric_names),
                    "sampler": c.sampler.name,
                    "trials_per_domain": c.budget.trials,
                    "domains": ",".join(d.name for d in c.domains),
                }
            )
            self._summary = self._init(f"{self.sweep_id}-summary", f"{self.sweep_id}-summary", "summary", cfg)
        return self._summary

    def _log_live_front(self, domain: str, mine: pd.DataFrame) -> None:
        """Log the current front of ``domain`` (``mine``: its store rows) to the summary run."""
        from search.results.sweep_files import fronts_for

        fr = fronts_for(self.config, mine).get(domain)
        finished = int((mine["status"] != "running").sum()) if len(mine) else 0
        point: dict[str, float] = {f"live/trials_finished/{domain}": finished}
        if fr is not None:
            point |= {
                f"live/hypervolume/{domain}": fr.hypervolume,
                f"live/front_size/{domain}": len(fr.front),
            }
        self._summary_run().log(point)

    # ------------------------------------------------------------------ end of sweep
    def backfill(self) -> list[str]:
        """Write the run of every stored trial with a final status that has none yet (driver died
        mid-trial, or the sweep ran without W&B); returns their trial ids."""
        from search.results.store import ResultStore

        store = ResultStore(self.store_root)
        inter = store.intermediate()
        written: list[str] = []
        # pyarrow rows keep ints as ints and nulls as None (pandas would turn nullable ints into floats).
        for rec in store.trials_table().to_pylist():
            tid = str(rec["trial_id"])
            if tid in self.logged or rec.get("status") == "running":
                continue
            run = self._trial_run(tid, rec, str(rec.get("domain")))  # the open one, if any
            hist = inter[inter["trial_id"] == tid].sort_values("iteration") if len(inter) else pd.DataFrame()
            last_step = int(run.step) if getattr(run, "step", 0) else -1
            for h in hist.to_dict(orient="records"):
                if int(h["iteration"]) > last_step:
                    run.log(scrub({"ap": h.get("ap"), "loss": h.get("loss")}), step=int(h["iteration"]))
            self._close_trial(tid, run, rec)
            written.append(tid)
        return written

    def finish(self) -> tuple[list[str], str]:
        """Backfill, then the summary: Pareto tables, hypervolume over trials, report plots. Returns
        (the trial ids backfilled, the summary run's id)."""
        import wandb

        from search.results.store import ResultStore
        from search.results.sweep_files import fronts_for

        backfilled = self.backfill()
        trials = ResultStore(self.store_root).trials()
        fronts = fronts_for(self.config, trials)
        run = self._summary_run()
        names = self.config.metric_names
        cols: list[str | int] = ["domain", "trial_id", "method", *names]
        rows: list[list[Any]] = []
        histories: dict[str, list[float]] = {}
        for dom, fr in fronts.items():
            for r in fr.front.to_dict(orient="records"):
                rows.append([dom if c == "domain" else _plain(r.get(c)) for c in cols])
            run.summary[f"hypervolume/{dom}"] = fr.hypervolume
            run.summary[f"reference_point/{dom}"] = ",".join(f"{v:.6g}" for v in fr.ref)
            histories[dom] = hypervolume_history(
                trials[trials["domain"] == dom], fr.objectives, fr.modes, fr.ref, self.config.constraints
            )
        # x = trials finished in that domain, in finishing order, against the final reference point
        for i in range(max((len(h) for h in histories.values()), default=0)):
            point: dict[str, Any] = {
                f"hypervolume_over_trials/{d}": h[i] for d, h in histories.items() if i < len(h)
            }
            run.log({**point, "trials_finished": i + 1})
        run.log({"pareto_front": wandb.Table(columns=cols, data=rows)})
        col = study_column(trials)
        for dom, fr in fronts.items():
            _log_study_plots(run, dom, trials[trials[col] == dom], fr)
        rdir = self.out / "report"
        for png in sorted(rdir.glob("*.png")) if rdir.exists() else []:
            run.log({f"plots/{png.stem}": wandb.Image(str(png))})
        run_id = str(run.id)
        run.finish()
        self._summary = None
        return backfilled, run_id

    def close(self, exit_code: int = 1) -> None:
        """Finish whatever is still open (a sweep that raised); the ledger keeps them pending."""
        for run in list(self._runs.values()):
            run.finish(exit_code=exit_code)
        self._runs.clear()
        if self._summary is not None:
            self._summary.finish(exit_code=exit_code)
            self._summary = None


def study_table(trials: pd.DataFrame, front: FrontResult) -> tuple[list[str | int], list[list[Any]]]:
    """(columns, rows) of a study's completed trials: id, search parameters, objectives and whether
    the trial is on the front / the knee. One row per run, like W&B's parallel-coordinates panel."""
    names = list(front.objectives)
    cols: list[str | int] = ["trial_id", *PARAM_COLUMNS, *names, "on_front", "knee"]
    on = set(front.front["trial_id"]) if "trial_id" in front.front else set()
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    rows = []
    for rec in done.to_dict(orient="records"):
        tid = rec.get("trial_id")
        rows.append(
            [_plain(rec.get(c)) for c in ("trial_id", *PARAM_COLUMNS, *names)]
            + [tid in on, tid == front.knee_trial_id]
        )
    return cols, rows


def _log_study_plots(run: Any, study: str, trials: pd.DataFrame, front: FrontResult) -> None:
    """The study's table (``trials/<study>``: filter ``on_front`` in W&B) and a Pareto scatter of its
    front for the first objective against each other one (``pareto_scatter/<study>/<y>_vs_<x>``)."""
    import wandb

    cols, rows = study_table(trials, front)
    run.log({f"trials/{study}": wandb.Table(columns=cols, data=rows)})
    on_front = [r for r in rows if r[cols.index("on_front")]]
    if not on_front:
        return
    y = front.objectives[0]
    for x in front.objectives[1:]:
        table = wandb.Table(columns=cols, data=on_front)  # one each: W&B stores a logged table once
        title = f"{study}: Pareto front, {y} ({front.modes[0]}) vs {x}"
        run.log({f"pareto_scatter/{study}/{y}_vs_{x}": wandb.plot.scatter(table, x, y, title=title)})


# One logger per sweep running in this (driver) process. Tune pickles its callbacks with the
# experiment state, so the callback holds only the sweep id and finds the logger here.
_ACTIVE: dict[str, SweepLogger] = {}


def activate(logger: SweepLogger) -> None:
    _ACTIVE[logger.sweep_id] = logger


def deactivate(sweep_id: str) -> None:
    _ACTIVE.pop(sweep_id, None)


def active_logger(sweep_id: str) -> SweepLogger | None:
    """The logger live events of ``sweep_id`` go to, if live logging is on in this process."""
    return _ACTIVE.get(sweep_id)


def stop_live_logging(sweep_id: str) -> None:
    """After a W&B error: live logging off for this sweep (the store keeps everything, and
    ``peftsweep report OUT --wandb`` writes what is missing later)."""
    lg = _ACTIVE.pop(sweep_id, None)
    if lg is not None:
        lg.failed = True
        with contextlib.suppress(Exception):
            lg.close()


def log_sweep(out: str | os.PathLike[str], config: SweepConfig) -> list[str]:
    """Write the runs of every stored trial not yet logged, then the summary run; return the run ids
    written (order: trials, summary). For a sweep that ran without W&B, or to complete one."""
    from search.results.sweep_files import sweep_meta

    sweep_id = str(sweep_meta(Path(out))["sweep_id"])
    logger = SweepLogger(out, config, sweep_id)
    if not logger.enabled:
        return []
    try:
        trial_ids, summary_id = logger.finish()
    finally:
        logger.close()
    return [f"{sweep_id}-{t}"[-_MAX_ID:] for t in trial_ids] + [summary_id]
