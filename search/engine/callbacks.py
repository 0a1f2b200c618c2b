"""Tune callbacks run in the driver: write the store as trials progress and print progress.

Row status written for a trial (one row per trial id, upserted):
``running`` when it starts -- unless the store already holds it as finished (a resumed sweep
restarts the trials its last Tune snapshot saw running; one that finished after that snapshot keeps
its row, and the trainable re-reports it, marked ``replayed``, without training); on completion
the final record's ``status`` ("completed",
"failed", "infeasible") when its last result says ``final=True``, otherwise ``pruned`` (stopped
by MO-ASHA or a time budget) with the iteration it reached; ``failed`` with the error on error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from search.config import PARAM_COLUMNS
from search.engine.trainable import FINISHED_STATES
from search.results.store import ResultStore
from search.results.wandb_log import SweepLogger, active_logger, stop_live_logging

logger = logging.getLogger(__name__)

__all__ = ["StoreCallback", "WandbCallback", "trial_row"]


def trial_row(
    trial_id: str,
    config: dict[str, Any],
    result: dict[str, Any] | None,
    *,
    sweep_id: str,
    domain: str,
    sampler: str,
    error: str | None = None,
    stopped_by: str | None = None,
    study: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The store row of one trial from its config and last result (pure function). ``stopped_by``
    names who stopped a trial that ended without its final result (the scheduler's record);
    ``study`` defaults to the domain (one-model sweeps), ``model`` is the study's model label."""
    res = dict(result or {})
    params = {k: config.get(k) for k in PARAM_COLUMNS}
    row: dict[str, Any] = {**res, **params}
    row.update(
        {
            "trial_id": trial_id,
            "sweep_id": sweep_id,
            "domain": domain,
            "study": study or domain,
            "model": model,
            "sampler": sampler,
            "config_json": json.dumps(
                {k: v for k, v in config.items() if k in PARAM_COLUMNS}, sort_keys=True
            ),
        }
    )
    if error is not None:
        row.update({"status": "failed", "error": error[-2000:]})
    elif res.get("final") is True:
        row["status"] = res.get("status", "completed")
    elif result is None:
        row["status"] = "running"
    else:
        row["status"] = "pruned"
        it = res.get("iteration")
        row["rung"] = it
        row["iterations_done"] = it
        row["stop_reason"] = (
            stopped_by or f"stopped at iteration {it} before its end (time budget or interruption)"
        )
    if "finished_at" not in row or row.get("status") == "pruned":
        row["finished_at"] = time.time() if row["status"] != "running" else None
    return row


def _number(trial: Trial) -> int | None:
    # The study's own 1-based counter (search.engine.studies.StudyMux puts it in the config), else
    # Tune's experiment tag, which starts with the experiment's creation counter ("3_lr=...").
    n = dict(getattr(trial, "config", None) or {}).get("study_trial")
    if n is not None:
        return int(n)
    try:
        return int(str(trial.experiment_tag).split("_", 1)[0])
    except (AttributeError, ValueError):
        return None


def _error_text(trial: Trial) -> str:
    """The last line of the trial's exception (e.g. 'RuntimeError: ...'), from Tune's error file."""
    try:
        path = trial.error_file
        if path and os.path.exists(path):
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            return lines[-1].strip() if lines else ""
        err = trial.get_error()
        return str(err).strip().splitlines()[-1] if err else ""
    except Exception:  # noqa: BLE001 - the message is informational; never fail the sweep over it
        return ""


class StoreCallback(Callback):
    """Upserts trial and intermediate rows into a :class:`ResultStore` (picklable: holds paths)."""

    def __init__(
        self,
        store_root: str,
        sweep_id: str,
        domain: str,
        sampler: str,
        budget: int,
        quiet: bool = False,
        scheduler_state: str = "",
        study: str | None = None,
        model: str | None = None,
    ) -> None:
        self.study = study or domain
        self.model = model
        self.store_root = store_root
        self.scheduler_state = scheduler_state
        self.sweep_id = sweep_id
        self.domain = domain
        self.sampler = sampler
        self.budget = budget
        self.quiet = quiet
        self.done = 0
        self._finished: set[str] | None = None  # see _finished_in_store

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its snapshot: a resumed driver must read the store afresh.
        return {**self.__dict__, "_finished": None}

    def _store(self) -> ResultStore:
        return ResultStore(self.store_root)

    def _write(self, trial: Trial, result: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
        row = trial_row(
            trial.trial_id,
            dict(trial.config),
            result,
            sweep_id=self.sweep_id,
            domain=self.domain,
            sampler=self.sampler,
            error=error,
            stopped_by=self._stopped_by(trial.trial_id),
            study=getattr(self, "study", None),
            model=getattr(self, "model", None),
        )
        row["trial_number"] = _number(trial)
        self._store().upsert_trials([row])
        if self._finished is not None and row["status"] in FINISHED_STATES:
            self._finished.add(trial.trial_id)
        return row

    def _stopped_by(self, trial_id: str) -> str | None:
        """'early-stopped by MO-ASHA at rung R' when the scheduler's state file records the stop."""
        p = Path(self.scheduler_state) if self.scheduler_state else None
        if p is None or not p.exists():
            return None
        try:
            rung = json.loads(p.read_text()).get("stopped", {}).get(trial_id)
        except (OSError, ValueError):
            return None
        return None if rung is None else f"early-stopped by MO-ASHA at rung {rung} (dominated there)"

    def _finished_in_store(self, trial_id: str) -> bool:
        """Whether the store holds ``trial_id`` as finished. The store is read once per driver
        process (a whole-store read per trial start made the driver's cost per event grow with
        the sweep); after that this callback's own writes keep the set current -- the driver is
        the only writer of trial rows."""
        if self._finished is None:
            store = self._store()
            self._finished = set()
            if store.exists():
                table = store.trials_table().select(["trial_id", "status"]).to_pydict()
                self._finished = {
                    t for t, st in zip(table["trial_id"], table["status"]) if st in FINISHED_STATES
                }
        return trial_id in self._finished

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._finished_in_store(trial.trial_id):
            return  # never clobber a finished row (it would null its metrics and rerun the trial)
        self._write(trial, None)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get("final") is True or result.get("iteration") is None:
            return
        self._store().upsert_intermediate(
            [
                {
                    "trial_id": trial.trial_id,
                    "sweep_id": self.sweep_id,
                    "study": getattr(self, "study", self.domain),
                    "domain": self.domain,
                    "iteration": result.get("iteration"),
                    "ap": result.get("ap"),
                    "loss": result.get("loss"),
                    "trainable_pct": result.get("trainable_pct"),
                    "latency_ms": result.get("latency_ms"),
                    "time": time.time(),
                }
            ]
        )

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = dict(trial.last_result or {})
        if last.get("replayed") and self._finished_in_store(trial.trial_id):
            return  # the stored row re-reported by the trainable: it stays exactly as it is
        row = self._write(trial, last or None)
        self._progress(trial, row)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        msg = _error_text(trial)
        row = self._write(trial, trial.last_result or None, error=msg or "trial raised (see Tune logs)")
        self._progress(trial, row)

    def _progress(self, trial: Trial, row: dict[str, Any]) -> None:
        self.done += 1
        if self.quiet:
            return
        desc = str(row.get("method"))
        if row.get("method") == "lora":
            desc += f" r={row.get('lora_rank')} a={row.get('lora_alpha')}"
        elif row.get("method") == "adapter":
            desc += f" x{row.get('adapter_repetitions')} red={row.get('adapter_reduction')}"
        ap = row.get("ap")
        ap_s = f"{float(ap):.3f}" if isinstance(ap, int | float) else "-"
        pct = row.get("trainable_pct")
        pct_s = f"{float(pct):.2f}%" if isinstance(pct, int | float) else "-"
        lat = row.get("latency_ms")
        lat_s = f"{float(lat):.1f}ms" if isinstance(lat, int | float) else "-"
        print(
            f"[{getattr(self, 'study', self.domain)}] {self.done}/{self.budget} {trial.trial_id} {desc}: "
            f"{row['status']} ap={ap_s} params={pct_s} latency={lat_s}",
            file=sys.stderr,
            flush=True,
        )


class WandbCallback(Callback):
    """Forwards Tune's trial events (driver side) to the active :class:`SweepLogger` of a sweep.

    Must come after :class:`StoreCallback` in the callback list: a finished
    trial's run summary and the live front are read from the row that callback wrote.

    ``out`` (the sweep's output folder) is for Ray Client: there the Tuner, and so this callback,
    runs on the head node, where the driver's logger does not exist. The callback then opens a
    logger of its own from ``out`` (which the head must see) and closes it when the experiment
    ends; if it cannot, it says so loudly (a warning in the head's log and ``wandb/live_off.txt``
    that the driver prints) and the runs are written from the store when the sweep ends."""

    def __init__(self, sweep_id: str, domain: str, out: str | None = None) -> None:
        self.sweep_id = sweep_id
        self.domain = domain
        self.out = out
        self._opened: SweepLogger | None = None
        self._tried = False

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "domain": self.domain, "out": getattr(self, "out", None)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep_id"], state["domain"], state.get("out"))  # type: ignore[misc]

    def _logger(self) -> SweepLogger | None:
        lg = active_logger(self.sweep_id)
        if lg is None and getattr(self, "out", None) and not self._tried:
            self._tried = True
            lg = self._open_here()
        return lg

    def _open_here(self) -> SweepLogger | None:
        """A logger in this process (the head node under Ray Client), or None and a loud note."""
        from search.results.sweep_files import load_sweep
        from search.results.wandb_log import activate

        assert self.out is not None
        try:
            config, _ = load_sweep(self.out)
            lg = SweepLogger(self.out, config, self.sweep_id)
            activate(lg)
            self._opened = lg
            return lg
        except Exception as exc:  # noqa: BLE001 - W&B must never stop a sweep
            msg = (
                f"W&B live logging is OFF for sweep {self.sweep_id} on this node "
                f"({type(exc).__name__}: {exc}); the runs are written from the store when the sweep ends"
            )
            logger.warning(msg)
            try:
                Path(self.out, "wandb").mkdir(parents=True, exist_ok=True)
                Path(self.out, "wandb", "live_off.txt").write_text(msg + "\n")
            except OSError:
                pass
            return None

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        from search.results.wandb_log import deactivate

        if self._opened is not None:  # only the logger this callback opened (Ray Client)
            lg, self._opened = self._opened, None
            lg.close(exit_code=0)
            deactivate(self.sweep_id)

    def _safely(self, what: str, fn: Any, *args: Any) -> None:
        """Run one logging step; on a W&B error stop live logging for this sweep (the store has
        everything, and ``peftsweep report OUT --wandb`` writes what is missing later)."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a logging failure must not stop a sweep
            logger.warning(
                "W&B logging failed at %s (%s: %s); live logging is off for sweep %s, "
                "write the missing runs later with 'peftsweep report OUT --wandb'",
                what,
                type(exc).__name__,
                exc,
                self.sweep_id,
            )
            stop_live_logging(self.sweep_id)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if (lg := self._logger()) is not None:
            self._safely("trial start", lg.trial_started, trial.trial_id, dict(trial.config), self.domain)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get("final") is True:
            return
        if (lg := self._logger()) is not None:
            self._safely(
                "trial result", lg.trial_reported, trial.trial_id, dict(trial.config), self.domain, result
            )

    def _finished(self, trial: Trial) -> None:
        if (lg := self._logger()) is not None:
            self._safely("trial end", lg.trial_finished, trial.trial_id, dict(trial.config), self.domain)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finished(trial)
