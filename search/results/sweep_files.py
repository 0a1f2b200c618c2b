"""The files a sweep's output folder holds besides the store: its identity, config and fronts.

``sweep.json`` (sweep id, creation time), ``sweep.yaml`` (the validated config) and ``fronts.json``
(per-domain Pareto fronts, hypervolume and reference point). Readers (report, W&B, status, select)
and the engine that writes them share these helpers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from models.errors import UserError
from search.config import SweepConfig, load_config
from search.results.pareto import FrontResult, compute_fronts

__all__ = [
    "atomic_write_text",
    "sweep_meta",
    "load_sweep",
    "fronts_for",
    "write_fronts",
    "study_key",
    "store_root_of",
]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def sweep_meta(out: Path) -> dict[str, Any]:
    p = out / "sweep.json"
    if not p.exists():
        raise UserError(f"{out}: not a sweep output folder (no sweep.json)")
    return dict(json.loads(p.read_text()))


def study_key(trials: pd.DataFrame) -> str:
    """The column naming a trial's study: ``study`` (stores since issue 16), else ``domain``."""
    return "study" if "study" in trials.columns and trials["study"].notna().any() else "domain"


def fronts_for(config: SweepConfig, trials: pd.DataFrame) -> dict[str, FrontResult]:
    """One front per study (one per domain in a one-model sweep, where the study is the domain)."""
    return compute_fronts(
        trials,
        config.metric_names,
        config.modes,
        [o.ref for o in config.objectives],
        config.constraints,
        by=study_key(trials),
    )


def store_root_of(out: str | os.PathLike[str]) -> str:
    """The results store's root of a sweep folder: the ``results`` its config named (a path or a
    URI), else ``OUT/results``.

    The config's own field (``sweep.yaml``) decides, not ``sweep.json``'s ``results``: the engine
    writes the latter in every case as an absolute path, which no longer holds once the folder
    is moved or copied off the cluster. Folders without ``sweep.yaml`` fall back to sweep.json.
    """
    o = Path(out)
    if (o / "sweep.yaml").exists():
        import yaml

        named = (yaml.safe_load((o / "sweep.yaml").read_text()) or {}).get("results")
    else:
        p = o / "sweep.json"
        named = json.loads(p.read_text()).get("results") if p.exists() else None
    return str(named or o / "results")


def write_fronts(out: Path, fronts: dict[str, FrontResult]) -> None:
    atomic_write_text(
        out / "fronts.json", json.dumps({k: f.to_json() for k, f in fronts.items()}, indent=1, default=str)
    )


def load_sweep(out: str | os.PathLike[str]) -> tuple[SweepConfig, dict[str, Any]]:
    """(config, meta) of an existing output folder."""
    o = Path(out)
    meta = sweep_meta(o)
    return load_config(o / "sweep.yaml"), meta
