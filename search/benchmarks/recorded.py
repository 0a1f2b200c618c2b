"""Recorded trial tables of ``bench search``: loading, the grid's space, the sweep's reference point.

Shared by the sampler-only bench (:mod:`search.benchmarks.samplers`) and the engine-in-the-loop
replay (:mod:`search.benchmarks.engine_replay`). See :mod:`search.benchmarks.samplers` for what
the tables hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.config import METHODS, PARAM_NAMES, SearchSpaceConfig, SweepConfig

__all__ = [
    "OBJECTIVES",
    "REAL_TABLE",
    "SURROGATE_TABLE",
    "DEFAULT_TABLE",
    "RecordedTable",
    "load_table",
    "sweep_reference",
    "default_tables",
]

# (column, mode): a sweep's default objectives, in its order.
_DEFAULT_OBJECTIVES = SweepConfig.model_fields["objectives"].get_default(call_default_factory=True)
OBJECTIVES: list[tuple[str, str]] = [(o.name, o.mode) for o in _DEFAULT_OBJECTIVES]
# REAL results (search/benchmarks/record_real_grid.py) when shipped, else the labelled synthetic surrogate.
REAL_TABLE = Path(__file__).with_name("tables") / "recorded_trials.csv"
SURROGATE_TABLE = Path(__file__).with_name("tables") / "surrogate_trials.csv"
DEFAULT_TABLE = REAL_TABLE if REAL_TABLE.exists() else SURROGATE_TABLE
_KEY_COLS = list(PARAM_NAMES)  # the identity of a configuration in a recorded table

_NUMERIC = {"lora_rank", "lora_alpha", "adapter_repetitions", "adapter_reduction", "lr", "iterations"}
_MODES = [m for _, m in OBJECTIVES]


def _key(p: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for c in _KEY_COLS:
        v = p.get(c)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif c in _NUMERIC:
            out.append(f"{float(v):.6g}")
        else:
            out.append(str(v))
    return tuple(out)


@dataclass
class RecordedTable:
    """A recorded grid: objective values per configuration (original units), its search space."""

    values: dict[tuple[str, ...], np.ndarray]  # NaN row = the trial failed
    space: SearchSpaceConfig  # lr_grid set: every dimension is categorical
    source: str

    def completed(self) -> np.ndarray:
        vals = np.stack(list(self.values.values()))
        return vals[np.all(np.isfinite(vals), axis=1)]


def _space_of(rows: list[dict[str, str]], path: Path) -> SearchSpaceConfig:
    """The categorical space whose grid is exactly the table's configurations (UserError otherwise)."""
    from models.errors import UserError
    from search.engine.space import grid_points, split_list

    def uniq(method: str, col: str, conv: Any) -> list[Any]:
        return sorted({conv(r[col]) for r in rows if r["method"] == method})

    methods = sorted({r["method"] for r in rows}, key=lambda m: METHODS.index(m) if m in METHODS else 99)
    spec: dict[str, Any] = {
        "methods": methods,
        "iterations": sorted({int(float(r["iterations"])) for r in rows}),
    }
    if "lora" in methods:
        spec["lora"] = {
            "rank": uniq("lora", "lora_rank", lambda v: int(float(v))),
            "alpha": uniq("lora", "lora_alpha", float),
            "targets": [split_list(t) for t in uniq("lora", "lora_targets", str)],
        }
    if "adapter" in methods:
        spec["adapter"] = {
            "repetitions": uniq("adapter", "adapter_repetitions", lambda v: int(float(v))),
            "placement": [split_list(t) for t in uniq("adapter", "adapter_placement", str)],
            "residual": uniq("adapter", "adapter_residual", str),
            "reduction": uniq("adapter", "adapter_reduction", lambda v: int(float(v))),
        }
    spec["lr_grid"] = sorted({float(r["lr"]) for r in rows})
    space = SearchSpaceConfig.model_validate(spec)
    grid = {_key(p) for p in grid_points(space, space.lr_grid or [])}
    have = {_key(r) for r in rows}
    if grid != have:
        raise UserError(
            f"{path}: not a full grid ({len(grid - have)} configurations missing, {len(have - grid)} extra)"
        )
    return space


def load_table(path: str | Path = DEFAULT_TABLE) -> RecordedTable:
    """Read a recorded table (CSV: flat search parameters, ap, trainable_pct, latency_ms, source)."""
    import csv

    from models.errors import UserError

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: recorded trial table not found")
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [
        c for c in ["method", "lr", "iterations", *(n for n, _ in OBJECTIVES)] if rows and c not in rows[0]
    ]
    if not rows or missing:
        raise UserError(f"{p}: empty or missing column {missing[0] if missing else '(rows)'!r}")
    table: dict[tuple[str, ...], np.ndarray] = {}
    for row in rows:
        vals = [float(row[n]) if row[n] not in ("", "nan", "NaN") else math.nan for n, _ in OBJECTIVES]
        if row.get("status", "completed") != "completed":
            vals = [math.nan] * len(vals)
        table[_key(row)] = np.array(vals)
    sources = ",".join(sorted({row.get("source", "?") for row in rows}))
    return RecordedTable(table, _space_of(rows, p), sources)


def sweep_reference(values: np.ndarray) -> list[float]:
    """The reference point a sweep with the default objectives reports its hypervolume against
    (original units), for the grid's completed values."""
    from search.results.pareto import reference_point

    return reference_point([n for n, _ in OBJECTIVES], _MODES, [o.ref for o in _DEFAULT_OBJECTIVES], values)


def default_tables() -> list[Path]:
    """The shipped tables: the real recorded grid (when present) and the synthetic surrogate."""
    return [t for t in (REAL_TABLE, SURROGATE_TABLE) if t.exists()]
