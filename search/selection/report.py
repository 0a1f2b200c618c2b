"""The decision report of a selection: ``report.md`` and ``report.html`` in the output folder.

Sections: domain shift (with the known domains' shifts for scale, when the history has them),
warm start (neighbours and the trial queue), pilot results with the Pareto front over
(AP max, trainable % min, latency min) from :mod:`search.results.pareto`, the recommendation with its
explanation, the runner-up and what it would cost, and the failure modes seen — missed
detections, low confidence on true positives, small objects — because the paper found PEFT masks
that look right while confidence drops and small objects are missed.

Failure-mode flags compare a method with the best-AP pilot result (the reference for what this
domain allows) and with absolute floors: ``missed_rate`` > 0.3 or 0.05 above the best;
``tp_confidence`` < 0.5 or 0.05 below the best; ``small_recall`` < 0.5 or 0.1 below the best.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.cluster.storage import write_bytes_atomic
from search.selection.decision import Candidate, config_label

if TYPE_CHECKING:
    from search.selection.outcome import SelectionResult

__all__ = [
    "failure_modes",
    "pareto_labels",
    "plot_pilot",
    "render_markdown",
    "render_html",
    "write_selection_report",
]

# (field, label, worse-when, absolute floor/ceiling, margin vs best)
_FAILURE_RULES: tuple[tuple[str, str, str, float, float], ...] = (
    ("missed_rate", "missed detections", "higher", 0.30, 0.05),
    ("tp_confidence", "low confidence on true positives", "lower", 0.50, 0.05),
    ("small_recall", "small objects missed", "lower", 0.50, 0.10),
)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def failure_modes(record: Mapping[str, Any], best: Mapping[str, Any] | None) -> list[str]:
    """Human sentences for every failure-mode rule ``record`` trips (see module docstring)."""
    out: list[str] = []
    for key, label, worse, bound, margin in _FAILURE_RULES:
        v = _num(record.get(key))
        if not math.isfinite(v):
            continue
        b = _num(best.get(key)) if best is not None else math.nan
        reasons = []
        if worse == "higher":
            if v > bound:
                reasons.append(f"{key} {v:.2f} > {bound:.2f}")
            if math.isfinite(b) and v > b + margin:
                reasons.append(f"{v - b:+.2f} vs best")
        else:
            if v < bound:
                reasons.append(f"{key} {v:.2f} < {bound:.2f}")
            if math.isfinite(b) and v < b - margin:
                reasons.append(f"{v - b:+.2f} vs best")
        if reasons:
            out.append(f"{label} ({', '.join(reasons)})")
    return out


def pareto_labels(records: Sequence[Mapping[str, Any]]) -> set[str]:
    """trial_ids on the (AP max, trainable % min, latency min) front of the completed records."""
    import pandas as pd

    from search.results.pareto import compute_front

    if not records:
        return set()
    df = pd.DataFrame([dict(r) for r in records])
    for col in ("ap", "trainable_pct", "latency_ms"):
        if col not in df:
            return set()
    if "trial_id" not in df:
        df["trial_id"] = [str(i) for i in range(len(df))]
    front = compute_front(
        df, ["ap", "trainable_pct", "latency_ms"], ["max", "min", "min"], [0.0, 100.0, None]
    )
    return {str(t) for t in front.front["trial_id"]} if len(front.front) else set()


def _f(v: Any, digits: int = 2) -> str:
    f = _num(v)
    return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"


def _cand_line(c: Candidate | None) -> str:
    if c is None:
        return "none"
    return (
        f"**{c.label}** — AP {c.ap:.2f}, {c.trainable_params:,} trainable parameters "
        f"({c.trainable_pct:.3f} %), latency {c.latency_ms:.2f} ms"
    )


_PILOT_COLUMNS = (
    "label",
    "origin",
    "status",
    "iterations",
    "loss",
    "ap",
    "ap50",
    "ap_s",
    "trainable_params",
    "trainable_pct",
    "latency_ms",
    "missed_rate",
    "tp_confidence",
    "small_recall",
    "pareto",
)


_PROMOTION = {
    "loss": "A rung was ranked by `loss` (mean training loss over the steps just before the rung; "
    "lower continued), which orders early candidates by their final AP better than early AP does.",
    "ap": "A rung was ranked by its AP.",
    "ap+loss": "A rung was ranked by the mean of each candidate's AP rank and `loss` rank.",
}


def _pilot_rows(result: SelectionResult) -> list[list[str]]:
    front = pareto_labels(result.records)
    rows = []
    for r in result.records:
        rows.append(
            [
                config_label(r),
                str(r.get("origin", "")),
                str(r.get("status", "")),
                _f(r.get("iterations_done"), 0),
                _f(r.get("rung_loss")),
                _f(r.get("ap")),
                _f(r.get("ap50")),
                _f(r.get("ap_s")),
                f"{int(_num(r.get('trainable_params'))):,}"
                if math.isfinite(_num(r.get("trainable_params")))
                else "n/a",
                _f(r.get("trainable_pct"), 3),
                _f(r.get("latency_ms")),
                _f(r.get("missed_rate")),
                _f(r.get("tp_confidence")),
                _f(r.get("small_recall")),
                "yes" if str(r.get("trial_id")) in front else "",
            ]
        )
    return rows


def _sections(
    result: SelectionResult,
) -> list[tuple[str, list[str], list[tuple[Sequence[str], list[list[str]]]]]]:
    """(title, paragraphs, tables) per section; both renderers share this content."""
    d = result.decision
    s = result.shift
    secs: list[tuple[str, list[str], list[tuple[Sequence[str], list[list[str]]]]]] = []
    shift_par = [
        f"Reference: the base model's pretraining domain `{result.reference_domain}`; features are the "
        f"base backbone's globally pooled multi-level maps ({s.dim}-d, {s.n_reference} reference and "
        f"{s.n_target} target images).",
        f"Fréchet distance **{s.frechet:.3f}**, kernel MMD² **{s.mmd:.4f}**.",
    ]
    tables: list[tuple[Sequence[str], list[list[str]]]] = []
    known = getattr(result, "known_shifts", {}) or {}
    if known:
        rows = sorted([(v, k) for k, v in known.items()] + [(s.frechet, f"{result.domain} (new)")])
        tables.append((("domain", "Fréchet distance from reference"), [[k, f"{v:.3f}"] for v, k in rows]))
        shift_par.append("Known domains for scale (same feature extractor):")
    secs.append(("Domain shift", shift_par, tables))

    warm_par = []
    if result.neighbours:
        warm_par.append(
            "Nearest earlier domains: "
            + ", ".join(f"`{n.domain}` (Fréchet {n.distance:.3f})" for n in result.neighbours)
            + "."
        )
    else:
        warm_par.append("No earlier domain with statistics from this feature extractor: pilot matrix only.")
    queue_rows = [[str(i + 1), config_label(w.params), w.origin] for i, w in enumerate(result.queue)]
    secs.append(("Warm start", warm_par, [(("#", "configuration", "origin"), queue_rows)]))

    rungs = getattr(result, "rungs", []) or []
    pilot_par = [
        "`pareto` marks the non-dominated trials over (AP max, trainable % min, latency min). "
        "missed_rate, tp_confidence and small_recall are shares (0-1)."
    ]
    if len(rungs) > 1:
        pilot_par.append(
            f"Successive halving over rungs of {', '.join(str(r) for r in rungs)} iterations: every "
            "candidate trained with the full schedule, the best of each rung continued from where it "
            "stopped; `iterations` is how far each got. Only the candidates that reached the last rung "
            "are compared by the decision. "
            + _PROMOTION.get(getattr(result, "promote_by", "ap"), "")
            + " The best full-head candidate within the budgets always continued: the decision's AP bar "
            "is a fraction of the best pilot AP, which the full head usually sets."
        )
    compute = getattr(result, "compute_iterations", 0)
    if compute:
        pilot_par.append(f"Compute: {compute} trial-iterations in all.")
    untrained = _num(getattr(result, "untrained_ap", math.nan))
    if math.isfinite(untrained):
        pilot_par.append(f"Untrained model (base + new class head): AP {untrained:.2f}.")
    cand_rows = [
        [c.label, c.ap_text if c.completed else "n/a", str(c.seeds), _f(c.trainable_pct, 3), _f(c.latency_ms),
         "yes" if not d.violations.get(c.label) else "; ".join(d.violations.get(c.label, []))]
        for c in d.candidates
    ]  # fmt: skip
    tables_pilot: list[tuple[Sequence[str], list[list[str]]]] = [(_PILOT_COLUMNS, _pilot_rows(result))]
    if cand_rows:
        tables_pilot.append(
            (
                ("candidate", "AP (mean ± sd over seeds)", "seeds", "trainable %", "latency ms", "feasible"),
                cand_rows,
            )
        )
    secs.append(("Pilot results", pilot_par, tables_pilot))

    rec_par = []
    why = getattr(result, "nothing_learned", None)
    if why:
        causes = getattr(result, "likely_causes", []) or []
        rec_par.append(
            f"**No pilot learned anything** ({why}), so nothing is recommended. Likely causes: "
            + "; ".join(causes)
            + "."
        )
    elif d.feasible:
        rec_par.append("Recommendation: " + _cand_line(d.chosen) + ".")
    else:
        rec_par.append("**No method meets the budgets.** Closest: " + _cand_line(d.closest) + ".")
    # The explanation names the runner-up and its extra cost relative to the choice.
    rec_par.extend(d.explanation)
    secs.append(("Recommendation", rec_par, []))

    best = d.best.record if d.best is not None else None
    fm_par = []
    fm_rows = []
    for r in result.records:
        if r.get("status") != "completed":
            continue
        modes = failure_modes(r, best)
        fm_rows.append(
            [
                config_label(r),
                _f(r.get("missed_rate")),
                _f(r.get("tp_confidence")),
                _f(r.get("small_recall")),
                "; ".join(modes) or "none",
            ]
        )
    pick = d.chosen or d.closest
    if pick is not None:
        modes = failure_modes(pick.record, best)
        fm_par.append(f"{pick.label}: " + ("; ".join(modes) if modes else "no failure mode flagged") + ".")
    fm_par.append(
        "Flags: missed_rate > 0.30 or 0.05 above the best-AP method; tp_confidence < 0.50 or 0.05 "
        "below it; small_recall < 0.50 or 0.10 below it."
    )
    secs.append(
        (
            "Failure modes seen",
            fm_par,
            [(("method", "missed_rate", "tp_confidence", "small_recall", "flags"), fm_rows)],
        )
    )
    return secs


def _budget_text(result: SelectionResult) -> str:
    b = result.decision.budgets
    parts = [f"AP >= {b.min_ap_fraction:g} x best"]
    if b.param_budget_pct is not None:
        parts.append(f"trainable <= {b.param_budget_pct:g} %")
    if b.latency_budget_ms is not None:
        parts.append(f"latency <= {b.latency_budget_ms:g} ms")
    return ", ".join(parts)


def render_markdown(result: SelectionResult) -> str:
    lines = [
        f"# Method selection for `{result.domain}`",
        "",
        f"Budgets: {_budget_text(result)}. Output: `{result.out_dir}`; {result.seconds:.0f} s.",
        "",
    ]
    for title, pars, tables in _sections(result):
        lines += [f"## {title}", ""]
        for p in pars:
            lines += [p, ""]
        for header, rows in tables:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def _md_inline(text: str) -> str:
    """Escape, then the two inline marks the sections use: **bold** and `code`."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(result: SelectionResult) -> str:
    body = [
        f"<h1>Method selection for <code>{html.escape(result.domain)}</code></h1>",
        f"<p>Budgets: {html.escape(_budget_text(result))}.</p>",
    ]
    for title, pars, tables in _sections(result):
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [f"<p>{_md_inline(p)}</p>" for p in pars]
        for header, rows in tables:
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
            body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>peftsweep select</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def plot_pilot(result: SelectionResult, path: Path) -> bool:
    """AP vs trainable % of the completed pilot trials, front and choice marked; False if nothing to plot."""
    rows = [r for r in result.records if r.get("status") == "completed" and math.isfinite(_num(r.get("ap")))]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_labels(result.records)
    chosen = result.decision.chosen or result.decision.closest
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        on_front = str(r.get("trial_id")) in front
        x, y = _num(r.get("trainable_pct")), _num(r.get("ap"))
        ax.scatter([x], [y], marker="o" if on_front else "x", color="C0" if on_front else "C7")
        ax.annotate(config_label(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if chosen is not None and r.get("trial_id") == chosen.record.get("trial_id"):
            ax.scatter([x], [y], s=200, facecolors="none", edgecolors="C3", label="recommended")
    d = result.decision
    if math.isfinite(d.required_ap):
        ax.axhline(d.required_ap, color="C2", ls="--", lw=1, label="required AP")
    if d.budgets.param_budget_pct is not None:
        ax.axvline(d.budgets.param_budget_pct, color="C1", ls=":", lw=1, label="param budget")
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("trainable parameters (% of model, log)")
    ax.set_ylabel("mask AP")
    ax.set_title(f"pilot on {result.domain} (o: Pareto front over AP, params, latency)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return True


def write_selection_report(result: SelectionResult) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` (and ``pilot.png``) into the result's output folder."""
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "report.md", out / "report.html"
    png = out / "pilot.png"
    has_plot = plot_pilot(result, png)
    text = render_markdown(result)
    html_text = render_html(result)
    if has_plot:
        text = text.replace("## Recommendation", "![pilot](pilot.png)\n\n## Recommendation", 1)
        html_text = html_text.replace(
            "<h2>Recommendation</h2>", "<img src='pilot.png' alt='pilot'><h2>Recommendation</h2>", 1
        )
    write_bytes_atomic(md, text.encode())
    write_bytes_atomic(page, html_text.encode())
    return md, page
