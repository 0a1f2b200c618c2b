"""The interactive report: one self-contained HTML file a researcher explores in a browser.

``peftsweep report OUT`` writes ``OUT/report/interactive.html`` beside the static report. For
every study: a scatter plot of each pair of objectives (hovering a point shows the trial's
configuration and metrics; the front is drawn large with a dark outline, the knee as a star;
clicking a legend entry hides a method), a parallel-coordinates view of the search parameters
against AP (drag along any axis to filter, e.g. the ``method`` axis), and the front as a table;
then the hypervolume over trials of every study. Check boxes at the top filter every scatter
plot by method at once.

Plotly draws it (maintained, interactive, and its whole JavaScript bundle inlines into the file,
so the page works offline and can be mailed: ~5 MB). Numbers come from
:mod:`search.results.pareto` (:func:`report_data`); this module only draws them. Scatter plots
use SVG traces (not WebGL) so every trial is one ``path.point`` element: a browser test counts
them, and the page renders in browsers without a GPU.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.config import PARAM_COLUMNS, SweepConfig
from search.results.pareto import FrontResult, compute_front, hypervolume_history

__all__ = ["StudyData", "report_data", "build_html", "write_interactive", "FILE_NAME"]

FILE_NAME = "interactive.html"
# Parameters on the parallel-coordinates view (numeric after encoding; lr on a log10 axis).
_PARCOORD_PARAMS = ("method", "lora_rank", "lora_alpha", "adapter_repetitions", "adapter_reduction", "lr")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class StudyData:
    """What the report draws for one study."""

    study: str
    trials: pd.DataFrame  # completed trials with finite objective values (the scatter points)
    front: FrontResult
    on_front: np.ndarray  # bool per row of ``trials``
    hv_history: list[float]  # hypervolume after each finished trial (final reference point)
    counts: dict[str, int]  # all trials of the study by status


def report_data(config: SweepConfig, trials: pd.DataFrame, study_col: str = "domain") -> list[StudyData]:
    """Per-study numbers of the report (fronts, hypervolume history) from the store's trial rows."""
    out: list[StudyData] = []
    if not len(trials) or study_col not in trials:
        return out
    names = config.metric_names
    refs = [o.ref for o in config.objectives]
    for study in sorted(str(s) for s in trials[study_col].dropna().unique()):
        rows = trials[trials[study_col] == study]
        fr = compute_front(rows, names, config.modes, refs, config.constraints, domain=study)
        done = rows[rows["status"] == "completed"] if "status" in rows else rows
        vals = done[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        done = done[np.all(np.isfinite(vals), axis=1)].reset_index(drop=True)
        ids = set(fr.front["trial_id"]) if "trial_id" in fr.front else set()
        on = done["trial_id"].isin(ids).to_numpy() if len(done) else np.zeros(0, dtype=bool)
        hist = hypervolume_history(rows, fr.objectives, fr.modes, fr.ref, config.constraints)
        counts = rows["status"].value_counts().to_dict() if "status" in rows else {}
        out.append(StudyData(study, done, fr, on, hist, {str(k): int(v) for k, v in counts.items()}))
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _hover(rec: dict[str, Any], objectives: list[str], knee: str | None) -> str:
    """A trial's configuration and metrics, one per line (what hovering its point shows)."""
    lines = [
        f"<b>{html.escape(str(rec.get('trial_id')))}</b>" + (" (knee)" if rec.get("trial_id") == knee else "")
    ]
    for k in PARAM_COLUMNS:
        v = _fmt(rec.get(k))
        if v:
            lines.append(f"{k}: {html.escape(v)}")
    for k in objectives:
        lines.append(f"<b>{k}: {_fmt(rec.get(k))}</b>")
    return "<br>".join(lines)


def _methods(data: list[StudyData]) -> list[str]:
    seen: list[str] = []
    for d in data:
        for m in d.trials.get("method", pd.Series([], dtype=str)).astype(str):
            if m not in seen:
                seen.append(m)
    return seen


def _scatter(d: StudyData, x: str, y: str, colors: dict[str, str]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fr = d.front
    recs = d.trials.to_dict(orient="records")
    hover = [_hover(r, fr.objectives, fr.knee_trial_id) for r in recs]
    method = d.trials["method"].astype(str).to_numpy() if len(d.trials) else np.array([], dtype=str)
    for m in colors:
        for front in (False, True):
            idx = [i for i in range(len(recs)) if method[i] == m and bool(d.on_front[i]) == front]
            if not idx:
                continue
            knee = [recs[i].get("trial_id") == fr.knee_trial_id for i in idx]
            fig.add_trace(
                go.Scatter(
                    x=[recs[i][x] for i in idx],
                    y=[recs[i][y] for i in idx],
                    mode="markers",
                    name=f"{m} (front)" if front else m,
                    legendgroup=m,
                    meta={"method": m, "front": front},
                    customdata=[recs[i].get("trial_id") for i in idx],
                    text=[hover[i] for i in idx],
                    hovertemplate="%{text}<extra></extra>",
                    marker={
                        "color": colors[m],
                        "size": 13 if front else 8,
                        "opacity": 1.0 if front else 0.45,
                        "symbol": ["star" if k else "circle" for k in knee],
                        "line": {"width": 2 if front else 0, "color": "#222"},
                    },
                )
            )
    i, j = fr.objectives.index(x), fr.objectives.index(y)
    fig.update_layout(
        title=f"{y} vs {x}",
        xaxis_title=f"{x} ({fr.modes[i]})",
        yaxis_title=f"{y} ({fr.modes[j]})",
        height=380,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"font": {"size": 10}},
    )
    if x == "trainable_pct":  # spans orders of magnitude (LoRA r2 .. full head)
        fig.update_xaxes(type="log")
    return fig


def _parcoords(d: StudyData, methods: list[str]) -> Any:
    import plotly.graph_objects as go

    t = d.trials
    dims: list[dict[str, Any]] = []
    for p in _PARCOORD_PARAMS:
        if p not in t or t[p].isna().all():
            continue
        if p == "method":
            codes = [methods.index(str(m)) if str(m) in methods else -1 for m in t[p]]
            dims.append({"label": "method", "values": codes, "tickvals": list(range(len(methods))),
                         "ticktext": methods, "range": [-0.5, len(methods) - 0.5]})  # fmt: skip
            continue
        col = pd.to_numeric(t[p], errors="coerce")
        if p == "lr":
            dims.append({"label": "log10 lr", "values": np.log10(col).tolist()})
            continue
        # Inactive (NaN) for the other method: shown at 0, labelled "n/a".
        vals = col.fillna(0).tolist()
        ticks = sorted({float(v) for v in col.dropna()})
        dims.append({"label": p, "values": vals, "tickvals": [0.0, *ticks],
                     "ticktext": ["n/a", *[_fmt(v) for v in ticks]]})  # fmt: skip
    for name in d.front.objectives:
        dims.append({"label": name, "values": pd.to_numeric(t[name], errors="coerce").tolist()})
    dims.append({"label": "on front", "values": d.on_front.astype(int).tolist(), "tickvals": [0, 1],
                 "ticktext": ["no", "yes"], "range": [-0.2, 1.2]})  # fmt: skip
    color = pd.to_numeric(t["ap"], errors="coerce").tolist() if "ap" in t else [0.0] * len(t)
    fig = go.Figure(
        go.Parcoords(
            line={"color": color, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": "ap"}},
            dimensions=dims,
        )
    )
    fig.update_layout(title="parameters against AP (drag along an axis to filter)", height=420,
                      margin={"l": 60, "r": 40, "t": 110, "b": 30})  # fmt: skip
    return fig


def _hv_figure(data: list[StudyData]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for d in data:
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(d.hv_history) + 1)), y=d.hv_history, mode="lines+markers", name=d.study
            )
        )
    fig.update_layout(title="hypervolume over trials (final reference point of each study)",
                      xaxis_title="trials finished", yaxis_title="hypervolume", height=360)  # fmt: skip
    return fig


def _front_table(d: StudyData) -> str:
    fr = d.front
    cols = [c for c in ("trial_id", *PARAM_COLUMNS, *fr.objectives) if c in fr.front]
    cols = [c for c in cols if fr.front[c].notna().any()]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for rec in fr.front.to_dict(orient="records"):
        cls = " class='knee'" if rec.get("trial_id") == fr.knee_trial_id else ""
        body.append(
            f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(rec.get(c)))}</td>" for c in cols) + "</tr>"
        )
    return f"<table class='front'><tr>{head}</tr>{''.join(body)}</table>"


# Toggles every scatter trace of a method (trace.meta.method) in every plot at once.
_FILTER_JS = """
function peftsweepFilter() {
  var on = {};
  document.querySelectorAll('input.method-filter').forEach(function (b) { on[b.value] = b.checked; });
  document.querySelectorAll('.scatter-plot .js-plotly-plot').forEach(function (gd) {
    var vis = gd.data.map(function (t) { return (t.meta && on[t.meta.method] === false) ? false : true; });
    Plotly.restyle(gd, {visible: vis});
  });
}
"""

_CSS = (
    "body{font-family:sans-serif;margin:16px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}tr.knee{background:#ffd}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px}"
    ".filters label{margin-right:14px}"
)


def build_html(sweep_id: str, config: SweepConfig, data: list[StudyData], notes: Sequence[str] = ()) -> str:
    """The whole page (plotly.js inlined); ``notes``: HTML paragraphs under the title (points
    rejected before training, the fronts' latency re-measured: search.results.report)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    methods = _methods(data)
    colors = {m: _COLORS[i % len(_COLORS)] for i, m in enumerate(methods)}
    plot_cfg = {"displaylogo": False, "responsive": True}
    n = itertools.count()

    def div(fig: Any) -> str:
        height = f"{fig.layout.height or 400}px"
        return str(pio.to_html(fig, full_html=False, include_plotlyjs=False, config=plot_cfg,
                               div_id=f"plot-{next(n)}", default_height=height))  # fmt: skip

    title = f"peftsweep {sweep_id}"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script>",
        f"<script type='text/javascript'>{_FILTER_JS}</script></head><body>",
        f"<h1>Sweep {html.escape(sweep_id)}</h1>",
        "<p>Objectives: "
        + ", ".join(f"{html.escape(o.name)} ({o.mode})" for o in config.objectives)
        + ". Points are completed trials; the front is drawn large with a dark outline, the knee "
        "as a star. Hover a point for its configuration.</p>",
        "<p class='filters'>Methods: "
        + "".join(
            f"<label><input type='checkbox' class='method-filter' value='{html.escape(m)}' checked "
            f"onchange='peftsweepFilter()'> {html.escape(m)}</label>"
            for m in methods
        )
        + "</p>",
        *notes,
    ]
    for d in data:
        counts = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(d.counts.items()))
        ref = ", ".join(f"{k}={v:.4g}" for k, v in zip(d.front.objectives, d.front.ref))
        parts.append(
            f"<h2 id='study-{html.escape(d.study)}'>Study {html.escape(d.study)}</h2>"
            f"<p>Trials: {counts}. {len(d.front.front)} on the front of {d.front.n_considered} completed "
            f"feasible; hypervolume {d.front.hypervolume:.5g} (reference point {html.escape(ref)}).</p>"
        )
        # the first objective (AP) on the y axis against each cost, then the costs against each other
        first = d.front.objectives[0]
        pairs = [(b, a) if a == first else (a, b) for a, b in itertools.combinations(d.front.objectives, 2)]
        if len(d.trials):
            parts.append(
                f"<div class='grid scatter-plot' data-study='{html.escape(d.study)}' "
                f"data-points='{len(d.trials)}'>"
                + "".join(div(_scatter(d, x, y, colors)) for x, y in pairs)
                + "</div>"
            )
            parts.append(div(_parcoords(d, methods)))
        parts.append(_front_table(d))
    if data:
        parts.append("<h2>Hypervolume over trials</h2>" + div(_hv_figure(data)))
    summary = {d.study: {"points": len(d.trials), "front": int(d.on_front.sum())} for d in data}
    parts.append(f"<script type='application/json' id='peftsweep-summary'>{json.dumps(summary)}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_interactive(out: str | os.PathLike[str]) -> Path:
    """Write ``<out>/report/interactive.html`` for a sweep folder (atomically); return its path."""
    from search.results.status import study_column
    from search.results.store import ResultStore
    from search.results.sweep_files import load_sweep, store_root_of

    o = Path(out)
    config, meta = load_sweep(o)
    trials = ResultStore(store_root_of(o)).trials()
    data = report_data(config, trials, study_column(trials))
    rdir = o / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    path = rdir / FILE_NAME
    tmp = rdir / f".{FILE_NAME}.tmp-{os.getpid()}"
    from search.results.report import latency_check_lines, rejection_lines

    notes = [*rejection_lines(trials), *latency_check_lines(o)]
    tmp.write_text(build_html(str(meta.get("sweep_id", "")), config, data, notes), encoding="utf-8")
    os.replace(tmp, path)
    return path
