"""Static report of a sweep folder: ``report/index.html`` plus one PNG per domain (and a
hypervolume-over-trials PNG). Drawing only: the numbers come from :mod:`search.results.pareto`.

Each domain figure has every 2-D projection of the objectives (all pairs) and, with three or
more objectives, a 3-D view of the first three; completed trials are grey dots, the
non-dominated ones are red and labelled, the knee point is a star. Pruned/infeasible/failed
trials are not drawn as candidates (their values are partial) but are counted in the table.
"""

from __future__ import annotations

import html
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.results.journal import repeat_counts
from search.results.pareto import FrontResult, hypervolume_history
from search.results.status import REJECTED_PREFIX, training_compute

__all__ = [
    "write_report",
    "draw_domain",
    "draw_hv_history",
    "rejections",
    "rejection_lines",
    "latency_check_lines",
    "compute_paragraph",
]


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    os.replace(tmp, path)


def draw_domain(trials: pd.DataFrame, front: FrontResult, path: Path) -> Path:
    """The per-domain figure (2-D projections + 3-D view) written to ``path`` (PNG)."""
    plt = _mpl()
    names = front.objectives
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    ncols = len(pairs) + (1 if len(names) >= 3 else 0)
    fig = plt.figure(figsize=(4.2 * ncols, 3.8))
    ids = set(front.front["trial_id"]) if "trial_id" in front.front else set()
    on = done["trial_id"].isin(ids) if "trial_id" in done else np.zeros(len(done), dtype=bool)
    knee = done["trial_id"] == front.knee_trial_id if "trial_id" in done else on & False
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, ncols, k + 1)
        x, y = names[i], names[j]
        ax.scatter(done.loc[~on, x], done.loc[~on, y], c="0.6", s=18, label="trial")
        ax.scatter(done.loc[on, x], done.loc[on, y], c="tab:red", s=30, label="Pareto front")
        ax.scatter(
            done.loc[knee, x], done.loc[knee, y], marker="*", c="gold", edgecolors="k", s=160, label="knee"
        )
        ax.set_xlabel(f"{x} ({front.modes[i]})")
        ax.set_ylabel(f"{y} ({front.modes[j]})")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    if len(names) >= 3:
        ax3 = fig.add_subplot(1, ncols, ncols, projection="3d")
        a, b, c = names[:3]
        ax3.scatter(done.loc[~on, a], done.loc[~on, b], done.loc[~on, c], c="0.6", s=12)
        ax3.scatter(done.loc[on, a], done.loc[on, b], done.loc[on, c], c="tab:red", s=28)
        ax3.set_xlabel(a)
        ax3.set_ylabel(b)
        ax3.set_zlabel(c)
    fig.suptitle(
        f"domain {front.domain}: {int(on.sum())} non-dominated of {len(done)} completed trials, "
        f"HV={front.hypervolume:.4g}"
    )
    _save(fig, path)
    plt.close(fig)
    return path


def draw_hv_history(histories: dict[str, list[float]], path: Path) -> Path:
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for dom, h in histories.items():
        ax.plot(np.arange(1, len(h) + 1), h, marker="o", ms=3, label=dom)
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return html.escape(str(v)) if v is not None else ""


def _rejected_mask(trials: pd.DataFrame) -> np.ndarray:
    if not len(trials) or "stop_reason" not in trials:
        return np.zeros(len(trials), dtype=bool)
    return trials["stop_reason"].astype(str).str.startswith(REJECTED_PREFIX).to_numpy()


def rejections(trials: pd.DataFrame) -> tuple[int, dict[str, int]]:
    """(points rejected before training, count per violated constraint) of a sweep's rows: the
    searcher's gate (search.engine.gate) stores each as an ``infeasible`` row whose stop_reason
    names the violations, e.g. ``trainable_pct=28.1 violates trainable_pct <= 10.0``."""
    if not len(trials) or "stop_reason" not in trials:
        return 0, {}
    reasons = trials["stop_reason"].astype(str)
    mask = _rejected_mask(trials)
    per: dict[str, int] = {}
    for r in reasons[mask]:
        for part in r[len(REJECTED_PREFIX) :].split("; "):
            rule = part.split(" violates ", 1)[-1]  # the constraint, without the point's value
            per[rule] = per.get(rule, 0) + 1
    return int(mask.sum()), per


def rejection_lines(trials: pd.DataFrame) -> list[str]:
    n, per = rejections(trials)
    if not n:
        return []
    why = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
    return [
        f"<p>{n} points rejected before training (constraints decided from parameter accounting "
        f"and the latency profile; no slot taken, not in the budget, never in a front). Violated: "
        f"{why}.</p>"
    ]


def compute_paragraph(rows: pd.DataFrame, repeats: int | None) -> list[str]:
    """One study's training compute: iterations trained of those scheduled (what early stopping
    saved), trials stopped early, and proposals the searcher told Optuna as repeats (never trained)."""
    trained_it, scheduled_it = training_compute(rows)  # rejected points are infeasible: not counted
    if trained_it <= 0:
        return []
    status = rows["status"].astype(str)
    trained = int(status.isin(("completed", "pruned", "failed")).sum())
    text = (
        f"Compute: {trained_it} of {scheduled_it} scheduled iterations trained "
        f"({scheduled_it / trained_it:.2f}x saved by early stopping); {int((status == 'pruned').sum())} "
        f"of {trained} trained trials stopped early by MO-ASHA"
    )
    if repeats:
        text += (
            f"; {repeats} proposals repeated a point already trained, training or stopped "
            "(told to Optuna, not trained, not in the budget)"
        )
    return [f"<p>{html.escape(text)}.</p>"]


def latency_check_lines(out: Path) -> list[str]:
    """The final fronts' latency re-measured in isolation (``latency_check.json``), if present."""
    import json

    path = out / "latency_check.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    worst = data.get("max_abs_relative_difference")
    n = len(data.get("members") or [])
    if worst is None:
        return []
    return [
        f"<p>Latency on {html.escape(str(data.get('device', '')))}: one figure per deployed "
        f"architecture from the latency profile; the {n} front members re-measured in isolation "
        f"after the sweep differ from it by at most {100 * float(worst):.1f} %.</p>"
    ]


def write_report(out: str | os.PathLike[str]) -> Path:
    """Write ``<out>/report/index.html`` (+ PNGs) for a sweep folder; return the HTML path."""
    from search.results.store import ResultStore
    from search.results.sweep_files import fronts_for, load_sweep, store_root_of, study_key

    o = Path(out)
    config, meta = load_sweep(o)
    trials = ResultStore(store_root_of(o)).trials()
    key = study_key(trials)
    # A one-model sweep's studies are its domains.
    label = "Domain" if key == "domain" or (trials["study"] == trials["domain"]).all() else "Study"
    fronts = fronts_for(config, trials)
    try:
        repeats = repeat_counts(
            config.sampler.storage or str(o / "optuna" / "journal.log"),
            [f"{meta['sweep_id']}-{s}" for s in fronts],
        )
    except Exception:  # noqa: BLE001 - the report never fails for lack of the optional journal
        repeats = {}
    rdir = o / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    cols = [
        "trial_id",
        "method",
        "lora_rank",
        "lora_alpha",
        "adapter_repetitions",
        "adapter_reduction",
        "lr",
        "iterations",
        *config.metric_names,
    ]
    cols = list(dict.fromkeys(c for c in cols if c in trials))
    parts = [
        f"<html><head><meta charset='utf-8'><title>peftsweep {html.escape(meta['sweep_id'])}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:12px}tr.knee{background:#ffd}</style></head><body>",
        f"<h1>Sweep {html.escape(meta['sweep_id'])}</h1>",
    ]
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    parts.append("<p>Trials: " + ", ".join(f"{html.escape(str(k))}: {v}" for k, v in counts.items()) + "</p>")
    parts.extend(rejection_lines(trials))
    parts.extend(latency_check_lines(o))
    histories: dict[str, list[float]] = {}
    for dom, fr in fronts.items():
        dtr = trials[trials[key] == dom]
        png = draw_domain(dtr, fr, rdir / f"front-{dom}.png")
        # over trained trials: points rejected before training took no slot (not in the budget)
        histories[dom] = hypervolume_history(
            dtr[~_rejected_mask(dtr)], fr.objectives, fr.modes, fr.ref, config.constraints
        )
        ref = ", ".join(f"{n}={r:.4g}" for n, r in zip(fr.objectives, fr.ref))
        parts.append(
            f"<h2>{label} {html.escape(dom)}</h2><p>{len(fr.front)} non-dominated of {fr.n_considered} "
            f"completed feasible trials ({fr.n_total} in total). Hypervolume {fr.hypervolume:.5g} "
            f"with reference point ({html.escape(ref)}). Knee: {html.escape(str(fr.knee_trial_id))}.</p>"
        )
        parts.extend(compute_paragraph(dtr, repeats.get(f"{meta['sweep_id']}-{dom}")))
        parts.append(f"<img src='{png.name}' style='max-width:100%'>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
        for rec in fr.front.to_dict(orient="records"):
            cls = " class='knee'" if rec.get("trial_id") == fr.knee_trial_id else ""
            parts.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(rec.get(c))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    if histories:
        hv_png = draw_hv_history(histories, rdir / "hypervolume.png")
        parts.append(f"<h2>Hypervolume over trials</h2><img src='{hv_png.name}'>")
    parts.append("</body></html>")
    path = rdir / "index.html"
    tmp = rdir / f".index.html.tmp-{os.getpid()}"
    tmp.write_text("\n".join(parts))
    os.replace(tmp, path)
    return path
