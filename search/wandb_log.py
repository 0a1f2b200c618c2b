"""Weights & Biases logging of a finished (or resumed) sweep, from the Parquet store.

One run per trial (``group=<sweep id>``, ``job_type="trial"``, ``name=<trial id>``; config = the
trial's search parameters; history = intermediate AP/loss per iteration; summary = the final
row's metrics and status) plus one ``job_type="summary"`` run with the Pareto table of every
domain, the report's scatter PNGs and the hypervolume after each finished trial.

Mode: ``auto`` -> online when ``WANDB_API_KEY`` is set, else offline (files under
``<out>/wandb``; ``wandb sync`` uploads them later). Secrets are never logged: only search
parameters and metrics are sent, and any key that looks like a credential is dropped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from search.config import KNOWN_METRICS, SweepConfig
from search.pareto import hypervolume_history
from search.space import PARAM_COLUMNS

__all__ = ["log_sweep", "resolve_mode", "scrub"]

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


def log_sweep(out: str | os.PathLike[str], config: SweepConfig) -> list[str]:
    """Log every trial and the summary; return the run ids written (order: trials, summary)."""
    import wandb

    from search.store import ResultStore
    from search.sweep import fronts_for, sweep_meta

    o = Path(out)
    meta = sweep_meta(o)
    sweep_id = str(meta["sweep_id"])
    mode = resolve_mode(config.wandb.mode)
    if mode == "disabled":
        return []
    store = ResultStore(o / "results")
    trials = store.trials()
    inter = store.intermediate()
    wdir = o / "wandb"
    wdir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "project": config.wandb.project,
        "entity": config.wandb.entity,
        "group": sweep_id,
        "mode": mode,
        "dir": str(wdir),
        "reinit": "create_new",
    }
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
    ids: list[str] = []
    # pyarrow rows keep ints as ints and nulls as None (pandas would turn nullable ints into floats).
    for rec in store.trials_table().to_pylist():
        tid = str(rec["trial_id"])
        run_id = f"{sweep_id}-{tid}"[-120:]
        cfg = scrub(
            {k: rec.get(k) for k in PARAM_COLUMNS} | {"domain": rec.get("domain"), "sweep_id": sweep_id}
        )
        run = wandb.init(
            id=run_id, name=tid, job_type="trial", config=cfg, resume="allow", settings=settings, **common
        )
        hist = inter[inter["trial_id"] == tid].sort_values("iteration") if len(inter) else pd.DataFrame()
        for h in hist.to_dict(orient="records"):
            run.log(scrub({"ap": h.get("ap"), "loss": h.get("loss")}), step=int(h["iteration"]))
        for k, v in scrub({c: rec.get(c) for c in _SUMMARY_COLS}).items():
            run.summary[k] = v
        run.finish()
        ids.append(run_id)

    fronts = fronts_for(config, trials)
    run = wandb.init(
        id=f"{sweep_id}-summary"[-120:],
        name=f"{sweep_id}-summary",
        job_type="summary",
        config=scrub(
            {
                "objectives": ",".join(config.metric_names),
                "sampler": config.sampler.name,
                "trials_per_domain": config.budget.trials,
            }
        ),
        resume="allow",
        settings=settings,
        **common,
    )
    cols: list[str | int] = ["domain", "trial_id", "method", *config.metric_names]
    rows: list[list[Any]] = []
    histories: dict[str, list[float]] = {}
    for dom, fr in fronts.items():
        for r in fr.front.to_dict(orient="records"):
            rows.append([dom if c == "domain" else r.get(c) for c in cols])
        run.summary[f"hypervolume/{dom}"] = fr.hypervolume
        run.summary[f"reference_point/{dom}"] = ",".join(f"{v:.6g}" for v in fr.ref)
        histories[dom] = hypervolume_history(
            trials[trials["domain"] == dom], fr.objectives, fr.modes, fr.ref, config.constraints
        )
    # one step per finished trial (per domain): x = trials finished in that domain
    for i in range(max((len(h) for h in histories.values()), default=0)):
        point: dict[str, Any] = {
            f"hypervolume_over_trials/{d}": h[i] for d, h in histories.items() if i < len(h)
        }
        run.log({**point, "trials_finished": i + 1})
    run.log({"pareto_front": wandb.Table(columns=cols, data=[[_plain(v) for v in r] for r in rows])})
    rdir = o / "report"
    for png in sorted(rdir.glob("*.png")) if rdir.exists() else []:
        run.log({f"plots/{png.stem}": wandb.Image(str(png))})
    run.finish()
    ids.append(f"{sweep_id}-summary"[-120:])
    return ids


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v
