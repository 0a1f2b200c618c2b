"""Method selection: pick the cheapest PEFT method that is good enough and fits the budgets.

Pure functions over recorded trial results (flat dicts: the sweep's parameter columns, see
:mod:`search.engine.space`, plus ``TrialRecord.to_dict()`` metrics), so the rule is testable without
training anything.

The rule (:func:`decide`):

1. ``best_ap`` is the highest AP among completed trials, whatever they cost (the full-head
   reference is in the pilot so "best" means "what adaptation can reach here").
2. A candidate is *feasible* when ``ap >= min_ap_fraction * best_ap``, ``trainable_pct <=
   param_budget_pct`` and ``latency_ms <= latency_budget_ms`` (a budget of None is not checked).
3. The choice is the feasible candidate with the fewest trainable parameters, then the lowest
   latency, then the highest AP.
4. The runner-up is the next feasible candidate in that order; when there is none, the
   highest-AP other completed candidate (with the budgets it breaks).
5. Without a feasible candidate the decision is infeasible and names the *closest* candidate:
   the smallest sum of relative shortfalls over the three requirements.

Rows of one configuration run with several seeds are one candidate: its AP is their mean, with
their standard deviation (``ap_sd``) and count (``seeds``). When the two best candidates by AP
differ by no more than the noise -- the combined seed standard deviation where both ran several
seeds, else :data:`search.selection.learned.DEFAULT_AP_NOISE` -- the explanation says so: the pilot
does not tell them apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from models.errors import UserError
from search.config import PARAM_NAMES
from search.selection.learned import DEFAULT_AP_NOISE

__all__ = [
    "EXIT_INFEASIBLE",
    "Budgets",
    "Candidate",
    "Decision",
    "candidate_from_record",
    "config_label",
    "config_key",
    "decide",
    "merge_seeds",
]

# Exit status of `peftsweep select` when no method meets the budgets (2 is reserved for bad input).
EXIT_INFEASIBLE = 3

# The flat parameter columns of a trial (search.config.PARAM_NAMES): the identity of a
# configuration for de-duplication and warm start.
CONFIG_COLUMNS = PARAM_NAMES


@dataclass(frozen=True)
class Budgets:
    """What the new domain's deployment allows. None: that budget is not checked."""

    latency_budget_ms: float | None = None
    param_budget_pct: float | None = None
    min_ap_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not (0.0 < self.min_ap_fraction <= 1.0):
            raise UserError(f"--min-ap-fraction: must be in (0, 1], got {self.min_ap_fraction}")
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise UserError(f"--latency-budget-ms: must be > 0, got {self.latency_budget_ms}")
        if self.param_budget_pct is not None and not (0 < self.param_budget_pct <= 100):
            raise UserError(f"--param-budget-pct: must be in (0, 100], got {self.param_budget_pct}")

    def to_dict(self) -> dict[str, float | None]:
        return {
            "latency_budget_ms": self.latency_budget_ms,
            "param_budget_pct": self.param_budget_pct,
            "min_ap_fraction": self.min_ap_fraction,
        }


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _norm(value: Any) -> Any:
    """Parquet round trips turn ints into floats (and inactive ones into NaN): normalise."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "item"):  # numpy scalar
        return _norm(value.item())
    return value


def config_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Hashable identity of a configuration: its set parameter columns, normalised."""
    return tuple((c, _norm(params[c])) for c in CONFIG_COLUMNS if c in params and _is_set(params[c]))


def config_label(params: Mapping[str, Any]) -> str:
    """Short human name: ``lora r8``, ``adapter x2``, ``full_head``."""
    method = str(params.get("method", "?"))
    if method == "lora" and _is_set(params.get("lora_rank")):
        return f"lora r{_norm(params['lora_rank'])}"
    if method == "adapter" and _is_set(params.get("adapter_repetitions")):
        return f"adapter x{_norm(params['adapter_repetitions'])}"
    return method


@dataclass(frozen=True)
class Candidate:
    """One pilot result: its configuration and the metrics the decision and report need."""

    label: str
    params: dict[str, Any]
    status: str
    ap: float
    trainable_params: int
    trainable_pct: float
    latency_ms: float
    record: dict[str, Any] = field(default_factory=dict)
    ap_sd: float = math.nan  # standard deviation over seeds (NaN: one seed)
    seeds: int = 1

    @property
    def completed(self) -> bool:
        return self.status == "completed" and math.isfinite(self.ap)

    @property
    def ap_text(self) -> str:
        """``41.20`` or ``41.20 ± 1.30 (3 seeds)``."""
        if self.seeds > 1 and math.isfinite(self.ap_sd):
            return f"{self.ap:.2f} ± {self.ap_sd:.2f} ({self.seeds} seeds)"
        return f"{self.ap:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "params": dict(self.params),
            "status": self.status,
            "ap": self.ap,
            "trainable_params": self.trainable_params,
            "trainable_pct": self.trainable_pct,
            "latency_ms": self.latency_ms,
            "ap_sd": self.ap_sd,
            "seeds": self.seeds,
        }


def _float(rec: Mapping[str, Any], key: str) -> float:
    v = rec.get(key)
    try:
        f = float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        raise UserError(f"results: field {key!r} is not a number ({v!r})") from None
    return f


def candidate_from_record(rec: Mapping[str, Any]) -> Candidate:
    """A :class:`Candidate` from one flat result row (parameter columns + TrialRecord fields)."""
    if "method" not in rec or not _is_set(rec.get("method")):
        raise UserError("results: a row has no 'method'")
    params = {c: _norm(rec[c]) for c in CONFIG_COLUMNS if c in rec and _is_set(rec[c])}
    tp = _float(rec, "trainable_params")
    return Candidate(
        label=str(rec.get("label") or config_label(params)),
        params=params,
        status=str(rec.get("status", "completed")),
        ap=_float(rec, "ap"),
        trainable_params=int(tp) if math.isfinite(tp) else -1,
        trainable_pct=_float(rec, "trainable_pct"),
        latency_ms=_float(rec, "latency_ms"),
        record={k: _norm(v) for k, v in rec.items()},
    )


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`decide`. ``chosen`` is None exactly when ``feasible`` is False."""

    feasible: bool
    chosen: Candidate | None
    runner_up: Candidate | None
    closest: Candidate | None
    best: Candidate | None
    required_ap: float
    budgets: Budgets
    violations: dict[str, list[str]]  # label -> reasons it is not feasible ([] if feasible)
    explanation: list[str]
    candidates: tuple[Candidate, ...] = ()  # every candidate decided on (seeds merged)
    top_two_within_noise: bool = False

    def to_dict(self) -> dict[str, Any]:
        def c(x: Candidate | None) -> dict[str, Any] | None:
            return None if x is None else x.to_dict()

        return {
            "feasible": self.feasible,
            "chosen": c(self.chosen),
            "runner_up": c(self.runner_up),
            "closest": c(self.closest),
            "best": c(self.best),
            "required_ap": self.required_ap,
            "budgets": self.budgets.to_dict(),
            "violations": {k: list(v) for k, v in self.violations.items()},
            "explanation": list(self.explanation),
            "candidates": [x.to_dict() for x in self.candidates],
            "top_two_within_noise": self.top_two_within_noise,
        }


def _violations(c: Candidate, budgets: Budgets, required_ap: float) -> list[str]:
    if not c.completed:
        err = c.record.get("error")
        return [f"trial {c.status}" + (f": {err}" if err else "")]
    out: list[str] = []
    if c.ap < required_ap:
        out.append(f"AP {c.ap:.2f} < required {required_ap:.2f}")
    if budgets.param_budget_pct is not None and not c.trainable_pct <= budgets.param_budget_pct:
        out.append(f"trainable {c.trainable_pct:.3f}% > budget {budgets.param_budget_pct:g}%")
    if budgets.latency_budget_ms is not None and not c.latency_ms <= budgets.latency_budget_ms:
        out.append(f"latency {c.latency_ms:.2f} ms > budget {budgets.latency_budget_ms:g} ms")
    return out


def _shortfall(c: Candidate, budgets: Budgets, required_ap: float) -> float:
    """Sum of relative misses; 0 for a feasible candidate. NaN metrics count as a full miss."""

    def rel(excess: float, scale: float) -> float:
        if math.isnan(excess):
            return 1.0
        return max(0.0, excess) / max(abs(scale), 1e-12)

    total = rel(required_ap - c.ap, required_ap) if required_ap > 0 else 0.0
    if budgets.param_budget_pct is not None:
        total += rel(c.trainable_pct - budgets.param_budget_pct, budgets.param_budget_pct)
    if budgets.latency_budget_ms is not None:
        total += rel(c.latency_ms - budgets.latency_budget_ms, budgets.latency_budget_ms)
    return total


def _cost_order(c: Candidate) -> tuple[float, float, float, str]:
    lat = c.latency_ms if math.isfinite(c.latency_ms) else math.inf
    return (float(c.trainable_params), lat, -c.ap, c.label)


def _cost_text(c: Candidate) -> str:
    return (
        f"{c.label}: AP {c.ap:.2f}, {c.trainable_params:,} trainable params "
        f"({c.trainable_pct:.3f}%), {c.latency_ms:.2f} ms"
    )


def _delta_text(other: Candidate, ref: Candidate) -> str:
    dp = other.trainable_params - ref.trainable_params
    dl = other.latency_ms - ref.latency_ms
    da = other.ap - ref.ap
    return (
        f"{dp:+,} trainable params ({other.trainable_pct - ref.trainable_pct:+.3f} pp), "
        f"{dl:+.2f} ms latency, {da:+.2f} AP"
    )


def _unique_labels(cands: list[Candidate]) -> list[Candidate]:
    """Two trials of one method (e.g. two learning rates) get ``#2``, ``#3`` so labels stay keys."""
    seen: dict[str, int] = {}
    out: list[Candidate] = []
    for c in cands:
        n = seen.get(c.label, 0) + 1
        seen[c.label] = n
        out.append(c if n == 1 else replace(c, label=f"{c.label} #{n}"))
    return out


def merge_seeds(cands: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per configuration (:func:`config_key`, first-seen order): the mean AP of its
    completed runs, their standard deviation and count; failed if none completed."""
    groups: dict[tuple[tuple[str, Any], ...], list[Candidate]] = {}
    for c in cands:
        groups.setdefault(config_key(c.params), []).append(c)
    out: list[Candidate] = []
    for runs in groups.values():
        done = [c for c in runs if c.completed]
        if len(runs) == 1 or not done:
            out.append(runs[0])
            continue
        aps = [c.ap for c in done]
        mean = math.fsum(aps) / len(aps)
        sd = math.sqrt(math.fsum((a - mean) ** 2 for a in aps) / (len(aps) - 1)) if len(aps) > 1 else math.nan
        out.append(replace(done[0], ap=mean, ap_sd=sd, seeds=len(aps)))
    return out


def _noise(a: Candidate, b: Candidate) -> tuple[float, str]:
    if a.seeds > 1 and b.seeds > 1 and math.isfinite(a.ap_sd) and math.isfinite(b.ap_sd):
        return math.hypot(a.ap_sd, b.ap_sd), "their combined seed standard deviation"
    return DEFAULT_AP_NOISE, "the typical seed-to-seed standard deviation (one seed each here)"


def _noise_line(done: list[Candidate]) -> tuple[bool, str]:
    top = sorted(done, key=lambda c: (-c.ap, c.trainable_params))[:2]
    if len(top) < 2:
        return False, ""
    a, b = top
    noise, what = _noise(a, b)
    diff = a.ap - b.ap
    if diff <= noise:
        return True, (
            f"The top two by AP, {a.label} ({a.ap_text}) and {b.label} ({b.ap_text}), are within noise: "
            f"{diff:.2f} AP apart, noise {noise:.2f} AP ({what}); this pilot does not tell them apart."
        )
    return False, (
        f"The top two by AP, {a.label} ({a.ap_text}) and {b.label} ({b.ap_text}), differ by {diff:.2f} AP, "
        f"more than the noise ({noise:.2f} AP, {what})."
    )


def decide(results: Iterable[Candidate | Mapping[str, Any]], budgets: Budgets) -> Decision:
    """Apply the selection rule (module docstring) to pilot results."""
    cands = _unique_labels(
        merge_seeds([r if isinstance(r, Candidate) else candidate_from_record(r) for r in results])
    )
    done = [c for c in cands if c.completed]
    best = max(done, key=lambda c: (c.ap, -c.trainable_params), default=None)
    required = budgets.min_ap_fraction * best.ap if best is not None else math.nan
    reasons = [_violations(c, budgets, required) for c in cands]
    violations = {c.label: r for c, r in zip(cands, reasons)}
    feasible = sorted((c for c, r in zip(cands, reasons) if not r), key=_cost_order)
    explanation: list[str] = []
    if best is None:
        explanation.append("No pilot trial completed, so there is nothing to choose from.")
        return Decision(
            False, None, None, None, None, required, budgets, violations, explanation, tuple(cands)
        )
    within, noise_line = _noise_line(done)
    explanation.append(
        f"Best pilot AP is {best.ap:.2f} ({best.label}); a method must reach "
        f"{budgets.min_ap_fraction:g} x {best.ap:.2f} = {required:.2f} AP"
        + (f", train <= {budgets.param_budget_pct:g}% of the parameters" if budgets.param_budget_pct else "")
        + (f", run in <= {budgets.latency_budget_ms:g} ms" if budgets.latency_budget_ms else "")
        + "."
    )
    if feasible:
        chosen = feasible[0]
        runner = feasible[1] if len(feasible) > 1 else None
        explanation.append(
            f"Chosen: {_cost_text(chosen)}. It is the cheapest of the {len(feasible)} method(s) that "
            "meet every requirement (fewest trainable parameters, then lowest latency)."
        )
        if runner is None:
            others = [c for c in done if c is not chosen]
            runner = max(others, key=lambda c: c.ap, default=None)
            if runner is not None:
                why = "; ".join(_violations(runner, budgets, required))
                explanation.append(
                    f"Runner-up: {runner.label} ({why}); it would cost {_delta_text(runner, chosen)}."
                )
        else:
            explanation.append(f"Runner-up: {runner.label}; it would cost {_delta_text(runner, chosen)}.")
        for c, r in zip(cands, reasons):
            if r and c is not runner:
                explanation.append(f"Rejected {c.label}: {'; '.join(r)}.")
        if noise_line:
            explanation.append(noise_line)
        return Decision(
            True, chosen, runner, None, best, required, budgets, violations, explanation, tuple(cands), within
        )
    closest = min(done, key=lambda c: (_shortfall(c, budgets, required), _cost_order(c)))
    explanation.append(
        f"No method meets the budgets. Closest: {_cost_text(closest)} "
        f"({'; '.join(_violations(closest, budgets, required))})."
    )
    for c, r in zip(cands, reasons):
        if c is not closest:
            explanation.append(f"Rejected {c.label}: {'; '.join(r)}.")
    if noise_line:
        explanation.append(noise_line)
    return Decision(
        False, None, None, closest, best, required, budgets, violations, explanation, tuple(cands), within
    )
