"""The report's account of points the gate rejected before training (search.results.report)."""

from __future__ import annotations

import pandas as pd

from search.config import parse_config
from search.results.interactive import build_html
from search.results.report import rejection_lines, rejections


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "rejected-1", "rejected-2", "b"],
            "status": ["completed", "infeasible", "infeasible", "infeasible"],
            "stop_reason": [
                None,
                "rejected before training: trainable_pct=28.1 violates trainable_pct <= 10.0",
                "rejected before training: trainable_pct=12 violates trainable_pct <= 10.0; "
                "latency_ms=61 violates latency_ms <= 50.0",
                "infeasible in the trial: latency_ms=70 violates latency_ms <= 50.0",  # not the gate's
            ],
        }
    )


def test_rejections_count_points_and_violated_constraints() -> None:
    n, per = rejections(_rows())
    assert n == 2
    assert per == {"trainable_pct <= 10.0": 2, "latency_ms <= 50.0": 1}
    assert rejections(_rows().drop(columns="stop_reason")) == (0, {})
    (line,) = rejection_lines(_rows())
    assert "2 points rejected before training" in line
    assert "trainable_pct &lt;= 10.0: 2, latency_ms &lt;= 50.0: 1" in line
    assert rejection_lines(_rows().iloc[:1]) == []


def test_interactive_report_carries_the_notes() -> None:
    cfg = parse_config({"domains": ["clean"]})
    page = build_html("sweep-x", cfg, [], rejection_lines(_rows()))
    assert "2 points rejected before training" in page


def test_status_keeps_rejected_points_out_of_the_budget() -> None:
    """``peftsweep status`` and the live rows: a rejected point is no finished trial (it took no
    slot), so a study with rejections is not 'finished' before its trained budget is."""
    from search.results.status import study_status

    cfg = parse_config({"domains": ["clean"], "budget": {"trials": 3}})
    rows = _rows().assign(ap=[10.0, None, None, None], trainable_pct=[1.0, 28.0, 12.0, 2.0])
    rows["latency_ms"] = 10.0
    rows["started_at"] = rows["finished_at"] = 1.0
    st = study_status("clean", rows, cfg, now=2.0)
    assert st.rejected == 2 and st.counts["infeasible"] == 1 and st.finished == 2
    assert st.state == "stopped" and st.to_json()["rejected_before_training"] == 2
