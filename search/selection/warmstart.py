"""The pilot matrix and its warm start from earlier sweeps.

A selection runs a small, fixed pilot (default: LoRA r4 and r8, adapters x2 and x3, the
full-head reference). Before it, the configurations that worked best on the *most similar*
earlier domains are tried: neighbours are found by feature statistics
(:mod:`search.selection.similarity`) in every history folder (a sweep's output folder holding its
:class:`search.results.store.ResultStore` tables and ``domain_stats/``); for each neighbour, nearest
first, its configuration that the selection rule would pick under the current budgets (and its
best-AP configuration when that differs) goes to the front of the queue. Points are
de-duplicated by :func:`search.selection.decision.config_key`; the training length of a warm point is reset to
the pilot's so all pilot APs are comparable.

The queue is handed to Optuna with ``study.enqueue_trial`` in order, so the study evaluates it
in exactly that order (:func:`enqueue_points`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import UserError
from search.selection.decision import Budgets, config_key, decide
from search.selection.shift import FeatureStats
from search.selection.similarity import nearest_domains

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "WarmPoint",
    "DEFAULT_PILOT",
    "parse_pilot",
    "pilot_matrix",
    "neighbour_points",
    "history_points",
    "warm_start_queue",
    "enqueue_points",
    "point_distributions",
]


def _defaults() -> tuple[str, str, str, int]:
    """LoRA targets, adapter placement/residual/reduction: the sweep space's defaults (one source)."""
    from search.config import AdapterSpace, LoraSpace
    from search.engine.space import join_list

    lora, adapter = LoraSpace(), AdapterSpace()
    return (
        join_list(lora.targets[0]),
        join_list(adapter.placement[0]),
        adapter.residual[0],
        adapter.reduction[0],
    )


DEFAULT_LORA_TARGETS = _defaults()[0]


@dataclass(frozen=True)
class WarmPoint:
    """One queued configuration and why it is there (``pilot`` or ``neighbour <domain>``)."""

    params: dict[str, Any]
    origin: str
    distance: float = math.nan  # Fréchet distance of the neighbour it came from (nan for pilot)


DEFAULT_PILOT = "lora:4,lora:8,adapter:2,adapter:3,full_head"
_HEAD_METHODS = ("full_head", "decoder_only", "class_mask")


def parse_pilot(text: str) -> list[tuple[str, int | None]]:
    """``"lora:4,adapter:2,full_head"`` -> ``[("lora", 4), ("adapter", 2), ("full_head", None)]``.

    ``lora:R`` is LoRA of rank R, ``adapter:N`` is N adapter repetitions; the head baselines
    (full_head, decoder_only, class_mask) take no number. Bad items raise UserError naming them.
    """
    out: list[tuple[str, int | None]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, num = item.partition(":")
        if name in ("lora", "adapter"):
            if not sep or not num.isdigit() or int(num) < 1:
                raise UserError(f"--pilot: {item!r} needs a positive number, e.g. {name}:4")
            out.append((name, int(num)))
        elif name in _HEAD_METHODS and not sep:
            out.append((name, None))
        else:
            raise UserError(
                f"--pilot: unknown item {item!r}; use lora:R, adapter:N, {', '.join(_HEAD_METHODS)}"
            )
    if not out:
        raise UserError("--pilot: names no method")
    return out


def pilot_matrix(
    pilot: str | Sequence[tuple[str, int | None]] = DEFAULT_PILOT,
    *,
    lr: float = 1e-3,
    iterations: int = 40,
    lora_alpha: float = 8.0,
) -> list[dict[str, Any]]:
    """The pilot points as flat sweep parameters (:data:`search.engine.space.PARAM_COLUMNS`).

    Default: LoRA r4 and r8, adapters x2 and x3, the full-head reference. LoRA and adapter
    settings other than rank / repetitions are the sweep space's defaults (:mod:`search.config`:
    the paper's recipe — LoRA alpha 8 on the MSDA projections and decoder self-attention q, v;
    1/4 bottleneck adapters after every attention with the kappa+lambda residual).
    """
    items = parse_pilot(pilot) if isinstance(pilot, str) else list(pilot)
    targets, placement, residual, reduction = _defaults()
    points: list[dict[str, Any]] = []
    for name, num in items:
        if name == "lora":
            points.append(
                {
                    "method": "lora",
                    "lora_rank": int(num or 8),
                    "lora_alpha": float(lora_alpha),
                    "lora_targets": targets,
                    "lr": lr,
                    "iterations": iterations,
                }
            )
        elif name == "adapter":
            points.append(
                {
                    "method": "adapter",
                    "adapter_repetitions": int(num or 1),
                    "adapter_placement": placement,
                    "adapter_residual": residual,
                    "adapter_reduction": reduction,
                    "lr": lr,
                    "iterations": iterations,
                }
            )
        else:
            points.append({"method": name, "lr": lr, "iterations": iterations})
    return points


def _trials_of(history_dir: Path, domain: str) -> list[dict[str, Any]]:
    from search.results.store import ResultStore
    from search.results.sweep_files import store_root_of

    # A sweep/selection output folder keeps its store where its config put it (else results/);
    # accept the store folder too.
    store = ResultStore(store_root_of(history_dir))
    if not store.exists():
        store = ResultStore(history_dir)
    if not store.exists():
        return []
    df = store.trials()
    if "domain" not in df:
        return []
    rows = df[df["domain"] == domain].to_dict(orient="records")
    return [{str(k): v for k, v in r.items()} for r in rows]


def neighbour_points(
    history_dirs: Sequence[str | os.PathLike[str]],
    stats: FeatureStats,
    *,
    feature_key: str,
    budgets: Budgets,
    k: int = 2,
    exclude: Sequence[str] = (),
) -> list[WarmPoint]:
    """Best configurations of the ``k`` nearest earlier domains over all ``history_dirs``, nearest first.

    Per neighbour: the configuration :func:`search.selection.decision.decide` picks on its recorded trials
    under ``budgets`` (if any is feasible), then its best-AP configuration.
    """
    found: list[tuple[float, str, Path]] = []
    for h in history_dirs:
        path = Path(h)
        for n in nearest_domains(path, stats, k, feature_key=feature_key, exclude=exclude):
            found.append((n.distance, n.domain, path))
    found.sort(key=lambda t: (t[0], t[1], str(t[2])))
    history = [
        (distance, domain, [r for r in _trials_of(path, domain) if r.get("status") == "completed"])
        for distance, domain, path in found[:k]
    ]
    return history_points(history, budgets)


def history_points(
    neighbours: Sequence[tuple[float, str, Sequence[Mapping[str, Any]]]], budgets: Budgets
) -> list[WarmPoint]:
    """Warm points from earlier domains' completed trials, nearest first.

    ``neighbours``: (distance, domain, completed trial rows). Per domain: the configuration
    :func:`search.selection.decision.decide` picks under ``budgets`` (if any is feasible), then its
    best-AP configuration when that differs. (``peftsweep bench select`` applies it to the
    recorded grids of the other domains.)
    """
    out: list[WarmPoint] = []
    for distance, domain, trials in sorted(neighbours, key=lambda t: (t[0], t[1])):
        rows = [r for r in trials if isinstance(r.get("ap"), int | float) and math.isfinite(float(r["ap"]))]
        if not rows:
            continue
        decision = decide(rows, budgets)
        picks = [c for c in (decision.chosen, decision.best) if c is not None]
        if len(picks) == 2 and config_key(picks[0].params) == config_key(picks[1].params):
            picks = picks[:1]
        for c in picks:
            out.append(WarmPoint(dict(c.params), f"neighbour {domain}", distance))
    return out


def warm_start_queue(
    pilot: Sequence[Mapping[str, Any]],
    warm: Sequence[WarmPoint],
    *,
    iterations: int | None = None,
) -> list[WarmPoint]:
    """Neighbour points first (in the given order), then the pilot; duplicates dropped.

    ``iterations`` (default: the first pilot point's) replaces the training length of warm points.
    """
    if iterations is None and pilot:
        iterations = int(pilot[0].get("iterations", 0)) or None
    queue: list[WarmPoint] = []
    seen: set[tuple[tuple[str, Any], ...]] = set()
    for w in warm:
        params = dict(w.params)
        if iterations is not None:
            params["iterations"] = iterations
        key = config_key(params)
        if key not in seen:
            seen.add(key)
            queue.append(WarmPoint(params, w.origin, w.distance))
    for p in pilot:
        key = config_key(p)
        if key not in seen:
            seen.add(key)
            queue.append(WarmPoint(dict(p), "pilot"))
    return queue


def point_distributions(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Categorical Optuna distributions covering every value the points use, per parameter."""
    import optuna

    values: dict[str, list[Any]] = {}
    for p in points:
        for name, v in p.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            bucket = values.setdefault(name, [])
            if v not in bucket:
                bucket.append(v)
    return {n: optuna.distributions.CategoricalDistribution(vs) for n, vs in values.items()}


def enqueue_points(study: Any, points: Sequence[WarmPoint]) -> None:
    """``study.enqueue_trial`` every point in order (with its origin as a user attribute)."""
    for w in points:
        study.enqueue_trial(dict(w.params), user_attrs={"origin": w.origin}, skip_if_exists=False)
