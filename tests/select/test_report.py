"""Decision report pieces: failure-mode flags, Pareto marks, markdown/HTML rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from search.selection.decision import Budgets, decide
from search.selection.outcome import SelectionResult
from search.selection.report import failure_modes, pareto_labels, render_html, render_markdown
from search.selection.shift import ShiftResult
from search.selection.similarity import Neighbour
from search.selection.warmstart import WarmPoint


def _rec(tid: str, method: str, ap: float, pct: float, lat: float, **kw: Any) -> dict[str, Any]:
    return {"trial_id": tid, "method": method, "status": "completed", "ap": ap, "trainable_pct": pct,
            "trainable_params": int(pct * 1000), "latency_ms": lat, "missed_rate": 0.1, "tp_confidence": 0.8,
            "small_recall": 0.7, "origin": "pilot", **kw}  # fmt: skip


def test_failure_modes_flags() -> None:
    best = {"missed_rate": 0.10, "tp_confidence": 0.80, "small_recall": 0.70}
    assert failure_modes(best, best) == []
    worse = {"missed_rate": 0.20, "tp_confidence": 0.70, "small_recall": 0.55}
    modes = failure_modes(worse, best)
    assert len(modes) == 3
    assert modes[0].startswith("missed detections") and "+0.10 vs best" in modes[0]
    assert modes[1].startswith("low confidence") and "-0.10 vs best" in modes[1]
    assert modes[2].startswith("small objects missed") and "-0.15 vs best" in modes[2]
    # Absolute floors apply without a best; NaN metrics (no small objects) are skipped.
    modes = failure_modes({"missed_rate": 0.5, "tp_confidence": 0.3, "small_recall": float("nan")}, None)
    assert modes == ["missed detections (missed_rate 0.50 > 0.30)", "low confidence on true positives "
                     "(tp_confidence 0.30 < 0.50)"]  # fmt: skip


def test_pareto_labels_three_objectives() -> None:
    recs = [
        _rec("a", "lora", 40.0, 0.2, 10.0, lora_rank=4),
        _rec("b", "lora", 39.0, 0.3, 10.0, lora_rank=8),  # dominated by a
        _rec("c", "full_head", 45.0, 30.0, 10.0),
        _rec("d", "adapter", 41.0, 0.5, 12.0, adapter_repetitions=2),
        {**_rec("e", "lora", 99.0, 0.1, 1.0, lora_rank=2), "status": "failed"},
    ]
    assert pareto_labels(recs) == {"a", "c", "d"}


def test_render_contains_every_section(tmp_path: Path) -> None:
    recs = [
        _rec("a", "lora", 40.0, 0.2, 10.0, lora_rank=4),
        _rec("c", "full_head", 45.0, 30.0, 10.0, missed_rate=0.05, tp_confidence=0.9),
        _rec("d", "adapter", 44.0, 0.5, 12.0, adapter_repetitions=2),
    ]
    decision = decide(recs, Budgets(param_budget_pct=5.0, min_ap_fraction=0.95))
    result = SelectionResult(
        domain="new<dom>", reference_domain="source", shift=ShiftResult(12.5, 0.3, 64, 32, 240),
        neighbours=[Neighbour("clutter", 3.0, "k")],
        queue=[WarmPoint({"method": "adapter", "adapter_repetitions": 2}, "neighbour clutter", 3.0)],
        records=recs, decision=decision, out_dir=tmp_path, feature_key="k", seconds=1.0,
        known_shifts={"street": 2.0, "xray": 40.0},
    )  # fmt: skip
    md = render_markdown(result)
    assert "Fréchet distance **12.500**" in md and "MMD² **0.3000**" in md
    # The new domain is placed among the known ones by shift.
    cells = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    order = [c for c in cells if c in ("street", "xray") or c.endswith("(new)")]
    assert order == ["street", "new<dom> (new)", "xray"]
    assert "Recommendation: **adapter x2**" in md
    # Over the 5 % budget, but the best other AP; with its extra cost.
    runner = "Runner-up: full_head (trainable 30.000% > budget 5%); it would cost +29,500 trainable params"
    assert runner in md
    # adapter x2's TP confidence is 0.10 below the best-AP method's: flagged for the choice.
    assert "adapter x2: low confidence on true positives (-0.10 vs best)." in md
    page = render_html(result)
    assert "new&lt;dom&gt;" in page and "new<dom>" not in page
    assert "<b>adapter x2</b>" in page
    # shift scale, warm-start queue, pilot results, candidates compared, failure modes
    assert page.count("<table>") == 5 and np.isfinite(result.shift.frechet)
    # One seed each: AP without a spread; full head (45.0) and adapters x2 (44.0) are within the
    # typical seed noise (2.0 AP), which the recommendation says.
    assert "| adapter x2 | 44.00 | 1 | 0.500 | 12.00 | yes |" in md
    assert "The top two by AP, full_head (45.00) and adapter x2 (44.00), are within noise" in md


def test_report_shows_seed_spread_and_nothing_learned(tmp_path: Path) -> None:
    recs = [_rec(f"a{s}", "lora", ap, 0.2, 10.0, lora_rank=4) for s, ap in enumerate((0.2, 0.4, 0.0))]
    recs.append(_rec("c", "full_head", 0.5, 30.0, 10.0))
    decision = decide(recs, Budgets())
    result = SelectionResult(
        domain="voc3", reference_domain="source", shift=ShiftResult(12.5, 0.3, 64, 32, 240),
        neighbours=[], queue=[], records=recs, decision=decision, out_dir=tmp_path, feature_key="k",
        seconds=1.0, untrained_ap=0.0, nothing_learned="the best pilot AP is 0.50 (at or near 0)",
        likely_causes=["too few training images (3; 16 or more)"], compute_iterations=160, rungs=[10, 20, 40],
    )  # fmt: skip
    md = render_markdown(result)
    assert "| lora r4 | 0.20 ± 0.20 (3 seeds) | 3 |" in md
    assert "**No pilot learned anything** (the best pilot AP is 0.50 (at or near 0)), so nothing is" in md
    assert "too few training images (3; 16 or more)" in md and "Recommendation:" not in md
    assert "rungs of 10, 20, 40 iterations" in md and "Compute: 160 trial-iterations" in md
    assert "Untrained model (base + new class head): AP 0.00." in md


def test_write_report_files(tmp_path: Path) -> None:
    from search.selection.report import write_selection_report

    recs = [_rec("a", "lora", 40.0, 0.2, 10.0, lora_rank=4), _rec("c", "full_head", 45.0, 30.0, 10.0)]
    decision = decide(recs, Budgets(min_ap_fraction=0.8))
    result = SelectionResult(
        domain="d", reference_domain="source", shift=ShiftResult(1.0, 0.1, 8, 8, 240), neighbours=[],
        queue=[], records=recs, decision=decision, out_dir=tmp_path / "o", feature_key="k", seconds=0.5,
    )  # fmt: skip
    md, page = write_selection_report(result)
    assert (tmp_path / "o" / "pilot.png").stat().st_size > 1000
    assert "![pilot](pilot.png)" in md.read_text() and "<img src='pilot.png'" in page.read_text()
    assert "No earlier domain" in md.read_text()
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left
