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
) -> dict[str, Any]:
    """The store row of one trial from its config and last result (pure function). ``stopped_by``
    names who stopped a trial that ended without its final result (the scheduler's record)."""
    res = dict(result or {})
    params = {k: config.get(k) for k in PARAM_COLUMNS}
    row: dict[str, Any] = {**res, **params}
    row.update(
        {
            "trial_id": trial_id,
            "sweep_id": sweep_id,
            "domain": domain,
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
    # Tune's experiment tag starts with the trial's 1-based creation counter ("3_lr=...").
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
    ) -> None:
        self.store_root = store_root
        self.scheduler_state = scheduler_state
        self.sweep_id = sweep_id
        self.domain = domain
        self.sampler = sampler
        self.budget = budget
        self.quiet = quiet
        self.done = 0

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
        )
        row["trial_number"] = _number(trial)
        self._store().upsert_trials([row])
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
        from search.engine.trainable import finished_row

        return finished_row(self.store_root, trial_id) is not None

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
            f"[{self.domain}] {self.done}/{self.budget} {trial.trial_id} {desc}: "
            f"{row['status']} ap={ap_s} params={pct_s} latency={lat_s}",
            file=sys.stderr,
            flush=True,
        )


class WandbCallback(Callback):
    """Forwards Tune's trial events (driver side) to the active :class:`SweepLogger` of a sweep.

    Must come after :class:`StoreCallback` in the callback list: a finished
    trial's run summary and the live front are read from the row that callback wrote."""

    def __init__(self, sweep_id: str, domain: str) -> None:
        self.sweep_id = sweep_id
        self.domain = domain

    def _logger(self) -> SweepLogger | None:
        return active_logger(self.sweep_id)

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
