"""The recorded select grids: one domain's configurations, their per-seed AP and loss curves.

``tables/select_<domain>.csv`` (one row per configuration, AP the mean over seeds) with its
``.curves.csv`` (one row per evaluation of each run: AP and the training loss since the previous
evaluation) and ``.json`` sidecar, written by :mod:`search.benchmarks.record_real_grid` ``--grid
select``. Recordings of the same grid on other seeds pool into one grid (:func:`pool_grids`), and a
pick can be scored on the seeds it did not train on (:func:`truth_grid`).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.errors import UserError

__all__ = [
    "TABLES",
    "DOMAINS",
    "TRUTHS",
    "DomainGrid",
    "grid_key",
    "load_grid",
    "load_distances",
    "pool_grids",
    "truth_grid",
    "rows_over",
    "norm_value",
    "ID_COLUMNS",
]

TABLES = Path(__file__).resolve().parent / "tables"
DOMAINS = ("clean", "clutter", "xray", "street")
# Grid columns that identify a configuration (the rest are metrics). ``iterations`` is left out:
# a pilot point's training length is the pilot's, the configuration is the same.
ID_COLUMNS = (
    "method",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "adapter_repetitions",
    "adapter_placement",
    "adapter_residual",
    "adapter_reduction",
    "lr",
)


def norm_value(v: Any) -> Any:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        v = f
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
    return v


def grid_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Identity of a configuration across the grid's CSV and the pilot's parameter dicts."""
    out = []
    for c in ID_COLUMNS:
        v = norm_value(params.get(c))
        if v is not None:
            out.append((c, v))
    return tuple(out)


@dataclass
class DomainGrid:
    """One domain's recorded grid: final rows, per-seed curves, and how it was recorded."""

    domain: str
    rows: list[dict[str, Any]]  # one per configuration: params + ap (mean), ap_sd, costs
    curves: dict[tuple[Any, int], dict[int, float]]  # (grid_key, seed) -> iteration -> AP
    seeds: list[int]
    iterations: int
    untrained_ap: dict[int, float] = field(default_factory=dict)
    sidecar: dict[str, Any] = field(default_factory=dict)
    # (grid_key, seed) -> iteration -> mean training loss over the steps since the previous evaluation
    losses: dict[tuple[Any, int], dict[int, float]] = field(default_factory=dict)
    source: str = ""  # the recording's CSV (pooled grids: the CSVs, comma-separated)

    def row(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        k = grid_key(params)
        for r in self.rows:
            if grid_key(r) == k:
                return r
        return None

    @property
    def lrs(self) -> list[float]:
        """The grid's learning rates (the pilot runs at these; the rules at the first)."""
        return sorted({float(r["lr"]) for r in self.rows})

    @property
    def ap_noise(self) -> float:
        """Median seed-to-seed standard deviation of final AP over the grid."""
        sds = [float(r["ap_sd"]) for r in self.rows if math.isfinite(float(r.get("ap_sd") or math.nan))]
        return statistics.median(sds) if sds else math.nan


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"--tables: {path} not found (record it with search.benchmarks.record_real_grid)")
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def load_grid(domain: str, tables: str | Path = TABLES) -> DomainGrid:
    """Read ``select_<domain>.csv``, its ``.curves.csv`` and ``.json`` sidecar from ``tables``."""
    base = Path(tables) / f"select_{domain}.csv"
    raw = _read_csv(base)
    rows: list[dict[str, Any]] = []
    for r in raw:
        row: dict[str, Any] = {k: norm_value(v) for k, v in r.items()}
        if row.get("method") == "lora":
            # The sweep's default LoRA targets are the empty set, stored as '' (the pilot's too).
            row["lora_targets"] = r.get("lora_targets", "")
        for k in ("ap", "ap_sd", "trainable_pct", "latency_ms"):
            row[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
        row["trainable_params"] = int(float(r["trainable_params"]))
        rows.append(row)
    curves: dict[tuple[Any, int], dict[int, float]] = {}
    losses: dict[tuple[Any, int], dict[int, float]] = {}
    seeds: set[int] = set()
    for r in _read_csv(base.with_name(base.stem + ".curves.csv")):
        seed = int(r["seed"])
        seeds.add(seed)
        ap = float(r["ap"]) if r["status"] == "completed" and r["ap"] != "" else math.nan
        curves.setdefault((grid_key(r), seed), {})[int(r["iteration"])] = ap
        loss = float(r["loss"]) if r.get("loss") not in (None, "") else math.nan
        losses.setdefault((grid_key(r), seed), {})[int(r["iteration"])] = loss
    side_path = base.with_suffix(".json")
    side = json.loads(side_path.read_text()) if side_path.is_file() else {}
    iterations = max((int(float(r["iterations"])) for r in raw), default=0)
    untrained = {int(k): float(v) for k, v in (side.get("untrained_ap") or {}).items()}
    return DomainGrid(domain, rows, curves, sorted(seeds), iterations, untrained, side, losses, str(base))


def final_aps(grid: DomainGrid, row: Mapping[str, Any], seeds: Iterable[int]) -> list[float]:
    """``row``'s finite final APs on ``seeds`` (from the curves: the end of each seed's run)."""
    aps = (grid.curves.get((grid_key(row), s), {}).get(grid.iterations, math.nan) for s in seeds)
    return [a for a in aps if math.isfinite(a)]


def rows_over(grid: DomainGrid, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The grid's rows with ap / ap_sd / seeds taken over ``seeds`` only."""
    rows = []
    for r in grid.rows:
        aps = final_aps(grid, r, seeds)
        rows.append(
            {
                **r,
                "ap": statistics.fmean(aps) if aps else math.nan,
                "ap_sd": statistics.stdev(aps) if len(aps) > 1 else math.nan,
                "seeds": len(aps),
            }
        )
    return rows


def pool_grids(grids: Sequence[DomainGrid]) -> DomainGrid:
    """One domain's recordings on different seeds (e.g. the tuning and the held-out tables) as one
    grid: the union of their seeds, each configuration's AP the mean over all of them. The
    recordings must hold the same configurations at the same training length on disjoint seeds."""
    first = grids[0]
    if len(grids) == 1:
        return first
    keys = sorted(grid_key(r) for r in first.rows)
    seeds = list(first.seeds)
    for g in grids[1:]:
        if g.domain != first.domain:
            raise UserError(
                f"--tables: {g.source} is domain {g.domain!r}, {first.source} is {first.domain!r}"
            )
        if sorted(grid_key(r) for r in g.rows) != keys or g.iterations != first.iterations:
            raise UserError(
                f"--tables: {g.source} records other configurations or training lengths than {first.source}; "
                "only recordings of the same grid pool"
            )
        both = sorted(set(seeds) & set(g.seeds))
        if both:
            raise UserError(
                f"--tables: {g.source} and an earlier table both record seed(s) {both} of {first.domain}; "
                "pool recordings of different seeds"
            )
        seeds += g.seeds
    side = dict(first.sidecar)
    minutes = [g.sidecar.get("record_minutes") for g in grids]
    if all(isinstance(m, (int, float)) for m in minutes):
        side["record_minutes"] = round(sum(float(m) for m in minutes if m is not None), 1)
    side["date"] = ", ".join(dict.fromkeys(str(g.sidecar.get("date")) for g in grids))
    pooled = replace(
        first,
        curves={k: v for g in grids for k, v in g.curves.items()},
        losses={k: v for g in grids for k, v in g.losses.items()},
        seeds=sorted(seeds),
        untrained_ap={k: v for g in grids for k, v in g.untrained_ap.items()},
        sidecar=side,
        source=", ".join(g.source for g in grids),
    )
    return replace(pooled, rows=rows_over(pooled, pooled.seeds))


# What a pick is scored on. "all": the mean over every recorded seed (the seeds the pick was
# decided on included: a pick that won on a lucky seed is partly credited with that luck).
# "unseen": the mean over the recorded seeds the pick did not train on (an independent truth;
# it needs more seeds than select trains, e.g. two recordings pooled).
TRUTHS = ("all", "unseen")


def truth_grid(grid: DomainGrid, seen: Iterable[int], truth: str = "all") -> DomainGrid:
    """The grid a pick is scored against (see :data:`TRUTHS`); ``seen``: the seeds it trained on."""
    if truth not in TRUTHS:
        raise UserError(f"--truth: one of {', '.join(TRUTHS)}, got {truth!r}")
    if truth == "all":
        return grid
    rest = [s for s in grid.seeds if s not in set(seen)]
    if not rest:
        raise UserError(
            f"--truth unseen: {grid.domain} records no seed beyond the {len(grid.seeds)} a pick trained on "
            "(pool a second recording with another --tables)"
        )
    untrained = {s: v for s, v in grid.untrained_ap.items() if s in rest}
    return replace(grid, rows=rows_over(grid, rest), untrained_ap=untrained)


def load_distances(tables: str | Path = TABLES) -> dict[str, dict[str, float]]:
    """``select_domains.json``: Fréchet distance between every pair of domains (and to source)."""
    path = Path(tables) / "select_domains.json"
    if not path.is_file():
        raise UserError(f"--tables: {path} not found (record it with search.benchmarks.record_real_grid)")
    data = json.loads(path.read_text())
    return {str(a): {str(b): float(d) for b, d in row.items()} for a, row in data["frechet"].items()}
