"""``peftsweep bench select``: does ``peftsweep select`` pick well, and at what compute?

Replayed on the recorded real grids (``tables/select_<domain>.csv`` + ``.curves.csv``, written by
:mod:`search.benchmarks.record_real_grid` ``--grid select``): every configuration of the grid
trained on each synthetic domain with 3 seeds (length, images and evaluation steps: the tables'
sidecars and :data:`search.benchmarks.record_real_grid.SELECT_SETTINGS`).

For each domain, budget scenario and pilot seed s:

- **select** runs its real candidate queue (:func:`search.selection.warmstart.candidate_points`:
  the pilot matrix at each pilot learning rate, after the neighbours' warm-start points when warm
  start is on) through the real successive halving (:mod:`search.selection.halving`, budget-aware
  promotion) and the real decision rule (:func:`search.selection.decision.decide`). A candidate's AP
  at a rung is seed s's recorded AP after that many iterations (a prefix of the full-schedule run:
  exactly what a stopped-then-continued pilot trial sees).
- **warm start** takes the other three domains as history (their recorded grids, mean AP over
  seeds), ranks them by the Fréchet distance of their backbone features to this domain
  (``tables/select_domains.json``) and puts the configurations the decision rule picks on the
  nearest two (and their best-AP configurations) first in the queue.
- **rules of thumb** ('always LoRA r8', 'always adapters x2', 'always full head', at select's
  default learning rate) train one configuration.

Truth is the grid's final AP: the mean over every recorded seed (``--truth all``), or over the seeds
the pick did not train on (``--truth unseen``: an independent truth; it needs more seeds than a pick
trains on, e.g. the tuning and the held-out recordings pooled by giving ``--tables`` twice).
*Best feasible* is the highest such AP among grid configurations within the scenario's parameter and
latency budgets; *regret* is best feasible minus the picked configuration's AP (AP points and % of the
best); a pick outside the budgets or no pick counts as the whole best AP lost. *Compute* is
trial-iterations as a % of a full sweep of the grid (every configuration once, at the grid's training
length) and of a full sweep of the project's search grid at that length. The same replay prints each
method family's best AP per domain against the paper's finding (LoRA close to adapters near
pretraining, adapters ahead under strong shift).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import UserError
from models.progress import Progress
from search.benchmarks.select_grid import (
    DOMAINS,
    TABLES,
    TRUTHS,
    DomainGrid,
    grid_key,
    load_distances,
    load_grid,
    norm_value,
    pool_grids,
    truth_grid,
)
from search.selection.halving import DEFAULT_PROMOTE_BY, PROMOTE_BY, within_budgets

# Select's own default (``peftsweep select --promote-by``), so the bench measures what users run.
PROMOTE_BY_DEFAULT = DEFAULT_PROMOTE_BY

__all__ = [
    "TABLES",
    "DOMAINS",
    "FULL_SWEEP_CONFIGS",
    "SCENARIOS",
    "RULES",
    "DomainGrid",
    "Scenario",
    "Outcome",
    "load_grid",
    "pool_grids",
    "truth_grid",
    "TRUTHS",
    "load_distances",
    "grid_key",
    "replay_select",
    "rung_agreement",
    "spearman",
    "rule_outcome",
    "family_best",
    "run_bench",
    "format_bench",
    "add_arguments",
    "main",
]

# The configurations of the search space bench search records (REAL_GRID x REAL_LRS): a full sweep
# of them at the select grid's training length is what a selection's compute is also measured against.
FULL_SWEEP_CONFIGS = 153
# What select's exit 4 (nothing learned) leaves the user with.
UNTRAINED = "untrained model (exit 4: base + new class head)"
FAMILIES = {
    "LoRA": ("lora",),
    "adapters": ("adapter",),
    "full head": ("full_head",),
    "partial heads": ("decoder_only", "class_mask"),
}


@dataclass(frozen=True)
class Scenario:
    """A deployment's budgets; latency as a factor of the base network's latency on that domain."""

    name: str
    param_budget_pct: float | None = None
    latency_factor: float | None = None
    min_ap_fraction: float = 0.9

    def budgets(self, grid: DomainGrid) -> Any:
        from search.selection.decision import Budgets

        lat = None
        if self.latency_factor is not None:
            base = [r["latency_ms"] for r in grid.rows if r["method"] in ("full_head", "lora")]
            lat = self.latency_factor * min(base)
        return Budgets(lat, self.param_budget_pct, self.min_ap_fraction)


SCENARIOS = (
    Scenario("no budget"),
    Scenario("params <= 5 %", param_budget_pct=5.0),
    Scenario("params <= 8 %, latency <= 1.03 x base", param_budget_pct=8.0, latency_factor=1.03),
)
# Rules of thumb: one configuration, trained at select's default learning rate.
RULES: dict[str, str] = {
    "always LoRA r8": "lora:8",
    "always adapters x2": "adapter:2",
    "always full head": "full_head",
}


@dataclass
class Outcome:
    """What one strategy got on one domain/scenario/seed."""

    strategy: str
    domain: str
    scenario: str
    seed: int
    picked: str | None
    picked_ap: float
    best_ap: float
    best_label: str
    cost_iterations: int
    grid_iterations: int
    full_sweep_iterations: int
    note: str = ""
    seen: tuple[int, ...] = ()  # the recorded seeds the pick trained on (rules: none)

    @property
    def compute_pct(self) -> float:
        """Trial-iterations as a % of a full sweep of the recorded grid."""
        return 100.0 * self.cost_iterations / self.grid_iterations

    @property
    def compute_full_pct(self) -> float:
        """... and as a % of a full sweep of the project's search grid (bench search's real table)."""
        return 100.0 * self.cost_iterations / self.full_sweep_iterations

    @property
    def regret(self) -> float:
        return self.best_ap - (self.picked_ap if math.isfinite(self.picked_ap) else 0.0)

    @property
    def regret_pct(self) -> float:
        return 100.0 * self.regret / self.best_ap if self.best_ap > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "domain": self.domain,
            "scenario": self.scenario,
            "seed": self.seed,
            "picked": self.picked,
            "picked_ap": self.picked_ap,
            "best_ap": self.best_ap,
            "best": self.best_label,
            "regret": self.regret,
            "regret_pct": self.regret_pct,
            "cost_iterations": self.cost_iterations,
            "compute_pct": self.compute_pct,
            "compute_full_pct": self.compute_full_pct,
            "note": self.note,
            "seen": list(self.seen),
        }


def _label(p: Mapping[str, Any]) -> str:
    from search.selection.decision import config_label

    lr = norm_value(p.get("lr"))
    return (
        f"{config_label({k: v for k, v in p.items() if v is not None})} lr {lr:g}" if lr else config_label(p)
    )


def _within(row: Mapping[str, Any], budgets: Any) -> bool:
    if budgets.param_budget_pct is not None and not row["trainable_pct"] <= budgets.param_budget_pct:
        return False
    return budgets.latency_budget_ms is None or row["latency_ms"] <= budgets.latency_budget_ms


def best_feasible(grid: DomainGrid, budgets: Any) -> dict[str, Any]:
    ok = [r for r in grid.rows if _within(r, budgets) and math.isfinite(r["ap"])]
    if not ok:
        raise UserError(f"bench select: no configuration of {grid.domain} fits the budgets")
    return max(ok, key=lambda r: r["ap"])


def _truth(grid: DomainGrid, params: Mapping[str, Any] | None, budgets: Any) -> tuple[float, str]:
    if params is None:
        return math.nan, "no pick"
    row = grid.row(params)
    if row is None:
        raise UserError(f"bench select: {_label(params)} is not a point of the {grid.domain} grid")
    if not _within(row, budgets):
        return math.nan, "outside the budgets"
    return float(row["ap"]), ""


def warm_points(
    domain: str,
    grids: Mapping[str, DomainGrid],
    distances: Mapping[str, Mapping[str, float]],
    budgets: Any,
    k: int = 2,
) -> list[Any]:
    """Warm-start points from the ``k`` nearest other domains' recorded grids (mean AP)."""
    from search.selection.warmstart import history_points

    others = sorted((d for d in grids if d != domain), key=lambda d: (distances[domain][d], d))[:k]
    history = {d: [{**r, "status": "completed"} for r in grids[d].rows] for d in others}
    return history_points([(distances[domain][d], d, history[d]) for d in others], budgets)


def replay_select(
    grid: DomainGrid,
    seed: int,
    scenario: Scenario,
    *,
    warm: Sequence[Any] = (),
    pilot: str | None = None,
    lrs: Sequence[float] | None = None,
    rungs: int = 3,
    eta: float = 2.0,
    strategy: str = "select",
    seeds: int = 1,
    promote_by: str = PROMOTE_BY_DEFAULT,
    truth: str = "all",
    keep_reference: bool = True,
) -> Outcome:
    """Select's pick on ``grid`` with pilot seed ``seed`` (module docstring), scored by the grid
    (over the seeds ``truth`` says, :data:`TRUTHS`).

    ``seeds`` > 1 replays ``--seeds``: the finalists also run, at full length, the next
    ``seeds - 1`` recorded seeds after ``seed`` (cyclically), and the decision is on their mean
    (charged ``seeds - 1`` full runs per finalist)."""
    from search.selection.candidates import candidate_points
    from search.selection.decision import decide
    from search.selection.halving import HalvingSchedule, successive_halving
    from search.selection.learned import nothing_learned
    from search.selection.warmstart import DEFAULT_PILOT

    budgets = scenario.budgets(grid)
    seen = tuple(seeds_for(grid, seed, seeds))
    scored = truth_grid(grid, seen, truth)
    best = best_feasible(scored, budgets)
    queue = candidate_points(pilot or DEFAULT_PILOT, list(lrs or grid.lrs), grid.iterations, warm=list(warm))
    # A grid still being recorded lacks some points: the pilot runs without them (said in the note).
    missing = sorted({_label(w.params) for w in queue if grid.row(w.params) is None})
    queue = [w for w in queue if grid.row(w.params) is not None]
    schedule = HalvingSchedule.geometric(
        grid.iterations, rungs, eta, promote_by=promote_by, keep_reference=keep_reference
    )

    def run_rung(cands: Sequence[tuple[int, Mapping[str, Any]]], length: int) -> list[dict[str, Any]]:
        out = []
        for _, p in cands:
            row = grid.row(p)
            curve = grid.curves.get((grid_key(p), seed))
            if row is None or curve is None:
                raise UserError(f"bench select: {_label(p)} (seed {seed}) is not in the {grid.domain} grid")
            if length not in curve:
                raise UserError(
                    f"bench select: {grid.domain} curves have no AP at iteration {length} "
                    f"(recorded: {sorted(curve)})"
                )
            ap = curve[length]
            out.append(
                {
                    **p,
                    "status": "completed" if math.isfinite(ap) else "failed",
                    "ap": ap,
                    "rung_loss": grid.losses.get((grid_key(p), seed), {}).get(length, math.nan),
                    "trainable_params": row["trainable_params"],
                    "trainable_pct": row["trainable_pct"],
                    "latency_ms": row["latency_ms"],
                }
            )
        return out

    result = successive_halving([w.params for w in queue], schedule, run_rung, budgets=budgets)
    finals = [result.last_rows[i] for i in result.finalists]
    extra = _final_rows(grid, finals, seen[1:])  # what select --seeds trains after the halving
    cost = _costs(grid, result.cost_iterations + len(extra) * grid.iterations)
    finals += extra
    untrained = grid.untrained_ap.get(seed, math.nan)
    verdict = nothing_learned(finals, untrained_ap=untrained, noise=grid.ap_noise)
    if verdict is not None:
        # Exit 4: nothing is adapted, the user keeps the base with the new class head -- scored as
        # the untrained model's AP (mean over the truth's seeds, as every truth here), which fits
        # any budget (no added parameters, the base network's latency).
        kept = [v for v in scored.untrained_ap.values() if math.isfinite(v)]
        return Outcome(
            strategy,
            grid.domain,
            scenario.name,
            seed,
            UNTRAINED if kept else None,
            statistics.fmean(kept) if kept else math.nan,
            best["ap"],
            _label(best),
            *cost,
            "nothing learned: " + verdict,
            seen,
        )
    params, how = _deployed(decide(finals, budgets), budgets)
    ap, note = _truth(scored, params, budgets)
    note = "; ".join(x for x in (how, note) if x)
    if missing:
        note = "; ".join(x for x in (note, f"not recorded, left out: {', '.join(missing)}") if x)
    return Outcome(
        strategy,
        grid.domain,
        scenario.name,
        seed,
        _label(params) if params else None,
        ap,
        best["ap"],
        _label(best),
        *cost,
        note,
        seen,
    )


def _costs(grid: DomainGrid, used: int) -> tuple[int, int, int]:
    """(trial-iterations used, a full sweep of the grid, a full sweep of the search grid)."""
    return used, len(grid.rows) * grid.iterations, FULL_SWEEP_CONFIGS * grid.iterations


def _deployed(decision: Any, budgets: Any) -> tuple[dict[str, Any] | None, str]:
    """What a user deploys after select: its choice; when it exits 3 (no method reaches the minimum
    AP fraction within the budgets), the closest method it names if that one fits the parameter and
    latency budgets (it misses only the AP floor, which the bench's truth does not impose: best
    feasible = best AP within the budgets), else nothing."""
    if decision.chosen is not None:
        return dict(decision.chosen.params), ""
    c = decision.closest
    if c is not None and within_budgets(
        {"trainable_pct": c.trainable_pct, "latency_ms": c.latency_ms}, budgets
    ):
        return dict(c.params), "exit 3, its closest"
    return None, ""


def seeds_for(grid: DomainGrid, seed: int, seeds: int) -> list[int]:
    """The recorded seeds a ``--seeds`` pick trains on: ``seed`` and the ``seeds - 1`` after it
    (cyclically over the recorded seeds)."""
    if seed not in grid.seeds:
        return [seed]
    at = grid.seeds.index(seed)
    return [grid.seeds[(at + k) % len(grid.seeds)] for k in range(min(max(seeds, 1), len(grid.seeds)))]


def _final_rows(
    grid: DomainGrid, rows: Sequence[Mapping[str, Any]], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per row of ``rows`` and seed of ``seeds``: its recorded AP at the end of that seed's
    run, as a trial trained to the end reports it (the decision merges the seeds)."""
    out = []
    for row in rows:
        for s in seeds:
            ap = grid.curves.get((grid_key(row), s), {}).get(grid.iterations, math.nan)
            out.append({**row, "seed": s, "ap": ap, "status": "completed" if math.isfinite(ap) else "failed"})
    return out


def whole_grid(
    grid: DomainGrid, seed: int, scenario: Scenario, seeds: int = 1, truth: str = "all"
) -> Outcome:
    """Reference, not a strategy: every grid configuration trained to the end on the seeds a
    ``--seeds`` pick from ``seed`` trains on (:func:`seeds_for`; the whole grid's compute, times
    ``seeds``) and the same decision rule on their mean APs. Its regret is what the seed-to-seed
    noise alone costs a pick decided on that many seeds: a pilot on them cannot expect to do better."""
    from search.selection.decision import decide

    budgets = scenario.budgets(grid)
    seen = tuple(seeds_for(grid, seed, seeds))
    scored = truth_grid(grid, seen, truth)
    best = best_feasible(scored, budgets)
    params, how = _deployed(decide(_final_rows(grid, grid.rows, seen), budgets), budgets)
    ap, note = _truth(scored, params, budgets)
    note = "; ".join(x for x in (how, note) if x)
    cost = _costs(grid, len(seen) * len(grid.rows) * grid.iterations)
    label = _label(params) if params else None
    return Outcome(
        f"({len(seen)}-seed whole grid)",
        grid.domain,
        scenario.name,
        seed,
        label,
        ap,
        best["ap"],
        _label(best),
        *cost,
        note,
        seen,
    )


def rule_outcome(grid: DomainGrid, rule: str, scenario: Scenario, lr: float | None = None) -> Outcome:
    """A rule of thumb: train one fixed configuration (one trial's compute) at ``lr``
    (default: the grid's first learning rate, which the pilot uses too)."""
    from search.selection.warmstart import pilot_matrix

    lr = grid.lrs[0] if lr is None else lr
    budgets = scenario.budgets(grid)
    best = best_feasible(grid, budgets)
    params = pilot_matrix(RULES[rule], lr=lr, iterations=grid.iterations)[0]
    if grid.row(params) is None:
        ap, note = math.nan, "not recorded"
    else:
        ap, note = _truth(grid, params, budgets)
    cost = _costs(grid, grid.iterations)
    return Outcome(
        rule, grid.domain, scenario.name, -1, _label(params), ap, best["ap"], _label(best), *cost, note
    )


def family_best(grid: DomainGrid) -> dict[str, dict[str, Any]]:
    """Best final AP (mean over seeds, with its sd and configuration) of each method family."""
    out: dict[str, dict[str, Any]] = {}
    for fam, methods in FAMILIES.items():
        rows = [r for r in grid.rows if r["method"] in methods and math.isfinite(r["ap"])]
        if rows:
            b = max(rows, key=lambda r: r["ap"])
            out[fam] = {"ap": b["ap"], "ap_sd": b["ap_sd"], "config": _label(b)}
    return out


def run_bench(
    tables: str | Path | Sequence[str | Path] = TABLES,
    domains: Sequence[str] = DOMAINS,
    *,
    rungs: int = 3,
    eta: float = 2.0,
    neighbours: int = 2,
    progress: Progress | None = None,
    seeds: int = 2,
    promote_by: str = PROMOTE_BY_DEFAULT,
    truth: str = "all",
) -> dict[str, Any]:
    """Every outcome (select cold and warm, rules) on every domain, scenario and seed;
    ``progress`` (``models.progress.Progress``) counts the replays, domain and scenario as text.
    Several ``tables`` folders (recordings of the same grids on other seeds) are pooled
    (:func:`pool_grids`); ``truth`` says which seeds score a pick (:data:`TRUTHS`)."""
    folders = [tables] if isinstance(tables, (str, Path)) else list(tables)
    grids = {d: pool_grids([load_grid(d, f) for f in folders]) for d in domains}
    have = (Path(folders[0]) / "select_domains.json").is_file()
    distances = load_distances(folders[0]) if have or len(grids) > 1 else {}
    outcomes: list[Outcome] = []
    # Per pilot seed: select cold (and warm when there are other domains), each with one seed and,
    # with ``seeds`` > 1, with the finalists' extra seeds; plus the whole-grid references on the
    # same seeds (one, and ``seeds``).
    # (strategy, warm start, seeds, promote_by, keep the full-head reference)
    variants = [("select", False, 1, promote_by, True)]
    variants += [("select + warm", True, 1, promote_by, True)] if len(grids) > 1 else []
    if seeds > 1:
        variants += [(f"{name}, {seeds} seeds", w, seeds, promote_by, True) for name, w, *_ in variants]
    if promote_by != "ap":  # the reference: rungs ranked by their AP, as before --promote-by
        variants.append(("select, rungs by AP", False, 1, "ap", True))
    # ... and the full-head reference cut by the rungs like any candidate, as before keep_reference
    variants.append(
        (
            f"select, {seeds} seeds, ref. cut" if seeds > 1 else "select, ref. cut",
            False,
            seeds,
            promote_by,
            False,
        )
    )
    references = sorted({1, seeds})
    per_seed = len(variants) + len(references)
    total = sum(len(SCENARIOS) * (per_seed * len(g.seeds) + len(RULES)) for g in grids.values())
    if progress is not None:
        progress.add("bench", "bench select", total)
    for d, grid in grids.items():
        for sc in SCENARIOS:
            if progress is not None:
                progress.update("bench", info=f"{d}: {sc.name}")
            budgets = sc.budgets(grid)
            warm = warm_points(d, grids, distances, budgets, neighbours) if len(grids) > 1 else []
            for s in grid.seeds:
                for name, use_warm, k, by, keep in variants:
                    outcomes.append(
                        replay_select(
                            grid, s, sc, warm=warm if use_warm else (), rungs=rungs, eta=eta, strategy=name,
                            seeds=k, promote_by=by, truth=truth, keep_reference=keep,
                        )
                    )  # fmt: skip
                outcomes.extend(whole_grid(grid, s, sc, k, truth) for k in references)
                if progress is not None:
                    progress.update("bench", advance=per_seed)
            for rule in RULES:
                outcomes.append(rule_outcome(grid, rule, sc))
            if progress is not None:
                progress.update("bench", advance=len(RULES))
    families = {d: family_best(g) for d, g in grids.items()}
    shift = {d: distances.get("source", {}).get(d, math.nan) for d in grids}
    return {
        "outcomes": [
            {**o.to_dict(), **_truth_noise(truth_grid(grids[o.domain], o.seen, truth), o)} for o in outcomes
        ],
        "families": families,
        "shift_from_source": shift,
        "noise": {d: g.ap_noise for d, g in grids.items()},
        "rank_agreement": {d: rung_agreement(g) for d, g in grids.items()},
        "grid_learned": {d: _grid_learned(g) for d, g in grids.items()},
        "untrained_ap": {d: g.untrained_ap for d, g in grids.items()},
        "grid_configs": {d: len(g.rows) for d, g in grids.items()},
        "sidecars": {
            d: {
                **{k: g.sidecar.get(k) for k in ("machine", "date", "record_minutes")},
                "base": (g.sidecar.get("base_checkpoint") or {}).get("checkpoint"),
            }
            for d, g in grids.items()
        },
        "replayed_on": _machine_and_load(),
        "promote_by": promote_by,
        "truth": truth,
        "seeds": {d: g.seeds for d, g in grids.items()},
    }


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (scipy's; ties at their mean rank); NaN for fewer than two pairs
    or a constant side."""
    import warnings

    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a, b).statistic)


def rung_agreement(grid: DomainGrid) -> dict[str, float]:
    """Are short pilots predictive? Per evaluation iteration: the mean over seeds of the Spearman
    correlation (over the grid's configurations) between AP there and final AP on the same seed;
    and ``seeds``: the mean over seed pairs of the correlation between two seeds' final APs (how
    well one seed predicts another -- what a one-seed pilot is up against); ``loss <it>``: the same
    for minus the training loss just before ``it`` (the signal ``--promote-by loss`` ranks by)."""
    out: dict[str, float] = {}
    keys = [grid_key(r) for r in grid.rows]
    its = sorted({it for (_, _), c in grid.curves.items() for it in c if it < grid.iterations})
    final = grid.iterations
    for it in its:
        rs = [_seed_pair_correlation(grid, keys, (s, it), (s, final)) for s in grid.seeds]
        out[str(it)] = _finite_mean(rs)
    if grid.losses:
        for it in its:
            rs = [_loss_correlation(grid, keys, s, it) for s in grid.seeds]
            out[f"loss {it}"] = _finite_mean(rs)
    rs = [
        _seed_pair_correlation(grid, keys, (s, final), (t, final))
        for i, s in enumerate(grid.seeds)
        for t in grid.seeds[i + 1 :]
    ]
    out["seeds"] = _finite_mean(rs)
    return out


def _seed_pair_correlation(
    grid: DomainGrid, keys: Sequence[Any], a: tuple[Any, int], b: tuple[Any, int]
) -> float:
    """Spearman correlation over the grid's configurations between AP at (seed, iteration) ``a``
    and at ``b``, over the configurations recorded at both."""
    return _paired_spearman(
        (
            grid.curves.get((k, a[0]), {}).get(a[1], math.nan),
            grid.curves.get((k, b[0]), {}).get(b[1], math.nan),
        )
        for k in keys
    )


def _loss_correlation(grid: DomainGrid, keys: Sequence[Any], seed: int, it: int) -> float:
    """Spearman over configurations between minus the training loss before ``it`` and final AP
    (same seed)."""
    return _paired_spearman(
        (
            -grid.losses.get((k, seed), {}).get(it, math.nan),
            grid.curves.get((k, seed), {}).get(grid.iterations, math.nan),
        )
        for k in keys
    )


def _paired_spearman(pairs: Iterable[tuple[float, float]]) -> float:
    """:func:`spearman` over the pairs where both values are finite (recorded)."""
    kept = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    return spearman([x for x, _ in kept], [y for _, y in kept])


def _finite_mean(xs: Sequence[float]) -> float:
    finite = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(finite) if finite else math.nan


def _grid_learned(grid: DomainGrid) -> str:
    """select's 'nothing learned' test applied to the grid's truth (mean AP of every configuration,
    mean untrained AP, the grid's seed noise): on a domain where it fires, exit 4 is the right answer."""
    from search.selection.learned import nothing_learned

    untrained = [v for v in grid.untrained_ap.values() if math.isfinite(v)]
    verdict = nothing_learned(
        [{"ap": r["ap"], "status": "completed"} for r in grid.rows],
        untrained_ap=statistics.fmean(untrained) if untrained else math.nan,
        noise=grid.ap_noise,
    )
    best = max((r["ap"] for r in grid.rows if math.isfinite(r["ap"])), default=math.nan)
    return f"nothing learned: {verdict}" if verdict else f"learned (best mean AP {best:.2f})"


def _truth_noise(grid: DomainGrid, o: Outcome) -> dict[str, Any]:
    """How sure the recording is that the pick is worse than the best: the standard error of the
    difference of their seed means (``truth_se``), and whether the regret is within it. A pick the
    recording cannot tell from the best has a regret that is mostly the truth's own noise."""
    rows = {_label(r): r for r in grid.rows}
    best, pick = rows.get(o.best_label), rows.get(o.picked) if o.picked else None
    if best is None or pick is None or not math.isfinite(o.picked_ap):
        return {"truth_se": math.nan, "within_noise": False}
    if pick is best:
        return {"truth_se": 0.0, "within_noise": True}

    def var(r: Mapping[str, Any]) -> float:
        sd, n = float(r.get("ap_sd") or math.nan), int(float(r.get("seeds") or len(grid.seeds) or 1))
        return sd * sd / n if math.isfinite(sd) and n > 0 else math.nan

    se = math.sqrt(var(best) + var(pick))
    return {"truth_se": se, "within_noise": bool(math.isfinite(se) and o.regret <= se)}


def _machine_and_load() -> str:
    import os
    import platform

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), load average {load}"


def _summary(outcomes: Sequence[Mapping[str, Any]], strategy: str) -> dict[str, float]:
    rows = [o for o in outcomes if o["strategy"] == strategy]
    reg = [o["regret_pct"] for o in rows]
    return {
        "n": len(rows),
        "mean_regret_pct": statistics.fmean(reg) if reg else math.nan,
        "worst_regret_pct": max(reg) if reg else math.nan,
        "mean_regret_ap": statistics.fmean(o["regret"] for o in rows) if rows else math.nan,
        "mean_compute_pct": statistics.fmean(o["compute_pct"] for o in rows) if rows else math.nan,
        "worst_compute_pct": max(o["compute_pct"] for o in rows) if rows else math.nan,
        "worst_compute_full_pct": max(o["compute_full_pct"] for o in rows) if rows else math.nan,
    }


def format_bench(res: Mapping[str, Any]) -> list[str]:
    """The bench's printed lines (computation above, text here)."""
    lines: list[str] = []
    outs = res["outcomes"]
    strategies = list(dict.fromkeys(o["strategy"] for o in outs))
    lines.append(
        "regret = best feasible AP of the grid - AP of the pick (final AP, mean over the seeds); compute = "
        "trial-iterations as % of one full sweep of the recorded grid, and of the search space's full "
        f"sweep (bench search's {FULL_SWEEP_CONFIGS} configurations at the grid's training length). "
        "'select, N seeds': the finalists also run N-1 more recorded seeds, decided on the mean. "
        "'(N-seed whole grid)' is a reference, not a strategy: every configuration trained to the end "
        "on the N seeds an N-seed pick trains on, the same decision rule -- the regret seed noise alone "
        "causes a decision on N seeds. When "
        "select exits 3 (nothing reaches the minimum AP fraction within the budgets) the closest method "
        "it names is scored if it fits the budgets ('exit 3, its closest'); when it exits 4 (nothing "
        "learned) the user keeps the base with the new class head, scored as the untrained AP. "
        "'within the truth's noise': the regret is at most the standard error of the difference "
        "between the best's and the pick's seed means (the recording cannot tell the pick from the best)."
    )
    if res.get("truth") == "unseen":
        lines.append(
            "truth: each pick is scored on the recorded seeds it did not train on (--truth unseen: an "
            "independent truth); the rules (no seed involved) on every recorded seed"
        )
    else:
        lines.append("truth: the mean over every recorded seed, the pick's own included (--truth all)")
    if res.get("seeds"):
        lines.append("recorded seeds: " + "; ".join(f"{d} {list(s)}" for d, s in res["seeds"].items()))
    if res.get("replayed_on"):
        lines.append(f"replayed on {res['replayed_on']} (a replay of recordings: no timing involved)")
    if res.get("promote_by"):
        lines.append(
            f"halving rungs ranked by {res['promote_by']} (select --promote-by); 'select, rungs by AP' "
            "is the same pilot with rungs ranked by their AP, for comparison"
            if res["promote_by"] != "ap"
            else "halving rungs ranked by ap (select --promote-by)"
        )
    for d, side in res["sidecars"].items():
        lines.append(
            f"{d}: recorded on {side.get('machine')} ({side.get('date')}, "
            f"{side.get('record_minutes')} min of runs, base {side.get('base')})"
        )
    for d in res["families"]:
        lines.append(
            f"\n== {d} (grid {res['grid_configs'][d]} configs, seed-to-seed AP sd ~{res['noise'][d]:.2f}, "
            f"untrained AP {', '.join(f'{v:.2f}' for v in res['untrained_ap'][d].values()) or 'n/a'})"
        )
        if res.get("grid_learned", {}).get(d):
            exits = [o for o in outs if o["domain"] == d and str(o["note"]).startswith("nothing learned")]
            lines.append(
                f"  the grid itself, by select's test: {res['grid_learned'][d]}; select replays that "
                f"exited 4 (nothing learned): {len(exits)}"
            )
        agree = res.get("rank_agreement", {}).get(d, {})
        if agree:
            early = ", ".join(
                f"at {k} it {v:+.2f}" for k, v in agree.items() if k != "seeds" and not k.startswith("loss")
            )
            lines.append(
                f"  rank agreement with final AP, same seed (Spearman over configurations, mean over seeds): "
                f"{early}; final AP seed vs seed: {agree.get('seeds', math.nan):+.2f}"
            )
            by_loss = ", ".join(f"at {k[5:]} it {v:+.2f}" for k, v in agree.items() if k.startswith("loss "))
            if by_loss:
                lines.append(f"  the same for minus the training loss before the rung: {by_loss}")
        for sc in dict.fromkeys(o["scenario"] for o in outs if o["domain"] == d):
            here = [o for o in outs if o["domain"] == d and o["scenario"] == sc]
            # The best on every recorded seed (a rule's truth); with --truth unseen each pick is
            # scored against the best on its own unseen seeds, which may differ.
            top = next((o for o in here if not o.get("seen")), here[0])
            every = (
                " (every seed; each pick against the best on its unseen seeds)"
                if res.get("truth") == "unseen"
                else ""
            )
            lines.append(f"  [{sc}] best feasible: {top['best']} AP {top['best_ap']:.2f}{every}")
            for st in strategies:
                rows = [o for o in here if o["strategy"] == st]
                if not rows:
                    continue
                picks = ", ".join(
                    sorted(
                        {f"{o['picked'] or '-'}{' (' + o['note'] + ')' if o['note'] else ''}" for o in rows}
                    )
                )
                reg = [o["regret"] for o in rows]
                regp = [o["regret_pct"] for o in rows]
                noisy = sum(1 for o in rows if o.get("within_noise"))
                comp = statistics.fmean(o["compute_pct"] for o in rows)
                full = statistics.fmean(o["compute_full_pct"] for o in rows)
                lines.append(
                    f"    {st:<20} regret {statistics.fmean(reg):5.2f} AP ({statistics.fmean(regp):5.1f} %, "
                    f"worst seed {max(regp):5.1f} %; {noisy}/{len(rows)} within the truth's noise)  "
                    f"compute {comp:5.1f} % of the grid, {full:4.1f} % of a full sweep  pick: {picks}"
                )
    lines.append("\n== summary over domains x scenarios x seeds")
    for st in strategies:
        s = _summary(outs, st)
        lines.append(
            f"  {st:<20} mean regret {s['mean_regret_ap']:5.2f} AP = {s['mean_regret_pct']:5.1f} % "
            f"(worst {s['worst_regret_pct']:5.1f} %), compute {s['mean_compute_pct']:5.1f} % of the grid "
            f"(worst {s['worst_compute_pct']:5.1f} %; {s['worst_compute_full_pct']:4.1f} % of a full sweep)"
        )
    for st in [s for s in strategies if s.startswith("(")]:
        rows_st = [o for o in outs if o["strategy"] == st]
        lines.append(
            f"  {st:<20} picks with regret > 10 %: {sum(1 for o in rows_st if o['regret_pct'] > 10.0)} of "
            f"{len(rows_st)} (the same rule on full runs of every configuration on those seeds)"
        )
    for st in [s for s in strategies if s.startswith("select")]:
        s = _summary(outs, st)
        regret_ok = all(o["regret_pct"] <= 10.0 for o in outs if o["strategy"] == st)
        beats = all(
            s["mean_regret_pct"] < _summary(outs, r)["mean_regret_pct"]
            for r in strategies
            if r.startswith("always")
        )
        per_domain = {
            d: statistics.fmean(o["regret_pct"] for o in outs if o["strategy"] == st and o["domain"] == d)
            for d in dict.fromkeys(o["domain"] for o in outs)
        }
        rows_st = [o for o in outs if o["strategy"] == st]
        bad = [o for o in rows_st if o["regret_pct"] > 10.0]
        k = len(rows_st[0].get("seen") or [1]) if rows_st else 1
        floor = [o for o in outs if o["strategy"] == f"({k}-seed whole grid)" and o["regret_pct"] > 10.0]
        lines.append(
            f"  {st:<20} picks with regret > 10 %: {len(bad)} of {len(rows_st)}, of which "
            f"{sum(1 for o in bad if o.get('within_noise'))} within the truth's noise (the whole grid "
            f"decided on the same {k} seed{'s' if k > 1 else ''}: {len(floor)})"
        )
        lines.append(
            f"  {st:<20} mean regret per domain: "
            + ", ".join(f"{d} {v:.1f} %" for d, v in per_domain.items())
            + f" (<= 10 % on every domain: {_met(all(v <= 10.0 for v in per_domain.values()))})"
        )
        grid_ok = s["worst_compute_pct"] <= 15
        full_ok = s["worst_compute_full_pct"] <= 15
        lines.append(
            f"  target ({st}): regret <= 10 % on every domain/scenario/seed: {_met(regret_ok)}; "
            f"compute <= 15 % of the grid: {_met(grid_ok)}, of a full sweep: {_met(full_ok)}; "
            f"lower mean regret than every rule: {'yes' if beats else 'no'}"
        )
    lines.append("\n== best AP per method family (final AP, mean +- sd over seeds)")
    fams = list(FAMILIES)
    lines.append("  domain   shift  " + "".join(f"{f:>22}" for f in fams) + "   adapters - LoRA")
    order = sorted(res["families"], key=lambda d: res["shift_from_source"].get(d, math.nan))
    for d in order:
        fb = res["families"][d]
        cells = "".join(
            f"{fb[f]['ap']:>15.2f} +-{fb[f]['ap_sd']:4.2f}" if f in fb else f"{'-':>22}" for f in fams
        )
        gap = fb["adapters"]["ap"] - fb["LoRA"]["ap"] if "adapters" in fb and "LoRA" in fb else math.nan
        lines.append(f"  {d:<8} {res['shift_from_source'].get(d, math.nan):5.2f}  {cells}   {gap:+.2f}")
    lines.extend(paper_finding(res))
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def paper_finding(res: Mapping[str, Any]) -> list[str]:
    """Whether 'LoRA close to adapters near pretraining, adapters ahead under strong shift' holds."""
    fam = res["families"]
    shift = res["shift_from_source"]
    doms = [d for d in fam if "adapters" in fam[d] and "LoRA" in fam[d]]
    if len(doms) < 2:
        return []
    order = sorted(doms, key=lambda d: shift.get(d, math.nan))
    near, far = order[: len(order) // 2], order[len(order) // 2 :]

    def gap(d: str) -> float:
        return float(fam[d]["adapters"]["ap"] - fam[d]["LoRA"]["ap"])

    def noise(d: str) -> float:
        return math.hypot(float(fam[d]["adapters"]["ap_sd"]), float(fam[d]["LoRA"]["ap_sd"]))

    close_near = all(abs(gap(d)) <= noise(d) for d in near)
    ahead_far = all(gap(d) > noise(d) for d in far)
    grows = statistics.fmean(gap(d) for d in far) > statistics.fmean(gap(d) for d in near)
    return [
        f"  paper's finding at small scale: near pretraining ({', '.join(near)}) LoRA within noise of "
        f"adapters: {'yes' if close_near else 'no'}; under strong shift ({', '.join(far)}) adapters ahead by "
        f"more than noise: {'yes' if ahead_far else 'no'}; adapters' lead larger on the far domains: "
        f"{'yes' if grows else 'no'} (noise = combined seed sd of the two best configurations)"
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tables",
        action="append",
        default=None,
        metavar="FOLDER",
        help="folder of the recorded select_<domain> tables; repeat it to pool recordings of the same "
        f"grids on other seeds (default: {TABLES})",
    )
    parser.add_argument(
        "--truth",
        choices=TRUTHS,
        default="all",
        help="which recorded seeds score a pick: all, or those it did not train on (unseen: needs "
        "more seeds than a pick trains on, e.g. two pooled recordings; default: %(default)s)",
    )
    parser.add_argument(
        "--domains", default=",".join(DOMAINS), help="comma-separated domains (default: %(default)s)"
    )
    parser.add_argument(
        "--rungs", type=int, default=3, help="successive-halving rungs (default: %(default)s)"
    )
    parser.add_argument("--eta", type=float, default=2.0, help="keep 1/eta per rung (default: %(default)s)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="also replay select --seeds N: finalists with N recorded seeds (1: off; default: %(default)s)",
    )
    parser.add_argument(
        "--promote-by",
        choices=PROMOTE_BY,
        default=PROMOTE_BY_DEFAULT,
        help="what ranks a rung, as select's --promote-by (default: select's, %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the machine-readable result")
    parser.add_argument("--quiet", action="store_true", help="no progress display (figures only)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the printed figures here")


def main(args: argparse.Namespace) -> int:
    domains = [d.strip() for d in str(args.domains).split(",") if d.strip()]
    # Progress on stderr (stdout is the figures or the JSON): a bar on a terminal, else lines.
    with Progress("off" if getattr(args, "quiet", False) else "auto") as progress:
        res = run_bench(
            args.tables or [TABLES],
            domains,
            rungs=args.rungs,
            eta=args.eta,
            progress=progress,
            seeds=args.seeds,
            promote_by=args.promote_by,
            truth=args.truth,
        )
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    lines = format_bench(res)
    print("\n".join(lines))
    if args.out:
        from models.data.coco import atomic_write_json

        txt = Path(args.out).with_suffix(".txt")
        tmp = txt.with_name(txt.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(txt)  # never a half-written figures file
        atomic_write_json(Path(args.out).with_suffix(".json"), res)
    return 0
