"""`peftsweep select` end to end on CPU: tiny Mask DINO, synthetic COCO sets, real trials.

Two selections: the first (clutter) runs the default pilot matrix and records its domain; the
second (street) uses the first as history, so its queue starts with clutter's pick, and has an
impossible latency budget, so it exits with the infeasible status and names the closest method.
One iteration teaches the tiny model nothing, so both pass ``--accept-untrained``; a third run
without it exits with the 'nothing learned' status, naming the likely causes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.data.coco import write_synthetic_coco
from search.cli import main
from search.results.store import ResultStore
from search.selection.decision import EXIT_INFEASIBLE
from search.selection.learned import EXIT_NOTHING_LEARNED
from search.selection.similarity import list_domain_stats

TINY = [
    "--iterations", "1", "--image-size", "64", "--num-train-images", "3", "--num-eval-images", "2",
    "--batch-size", "1", "--shift-images", "6", "--latency-runs", "1", "--device", "cpu", "--seeds", "1",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_select_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clutter = write_synthetic_coco("clutter", tmp_path / "clutter", 6, seed=3, image_size=64)
    out1 = tmp_path / "sel_clutter"
    rc = main(["select", "--data", str(clutter), "--images", str(clutter.parent / "images"),
               "--out", str(out1), "--json", "--min-ap-fraction", "0.5", "--accept-untrained",
               *TINY])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["domain"] == "clutter" and doc["reference_domain"] == "source"
    assert doc["shift"]["frechet"] > 0 and doc["shift"]["n_target"] == 6
    # Default pilot, in order, all origins "pilot" (no history).
    labels = [(q["origin"], q["params"]["method"]) for q in doc["queue"]]
    assert labels == [("pilot", "lora"), ("pilot", "lora"), ("pilot", "adapter"), ("pilot", "adapter"),
                      ("pilot", "full_head")]  # fmt: skip
    pilot = doc["pilot"]
    assert len(pilot) == 5 and all(p["status"] == "completed" for p in pilot)
    assert all(p["trainable_params"] > 0 and p["latency_ms"] > 0 for p in pilot)
    # Costs come from the real models: LoRA r4 < r8 < full head in trainable parameters.
    assert pilot[0]["trainable_params"] < pilot[1]["trainable_params"] < pilot[4]["trainable_params"]
    assert pilot[2]["trainable_params"] < pilot[3]["trainable_params"]
    decision = doc["decision"]
    assert decision["feasible"] is True and decision["chosen"] is not None
    # The choice obeys the rule on the numbers the pilot produced.
    best = max(p["ap"] for p in pilot)
    ok = [p for p in pilot if p["ap"] >= 0.5 * best]
    cheapest = min(ok, key=lambda p: (p["trainable_params"], p["latency_ms"], -p["ap"]))
    assert decision["chosen"]["trainable_params"] == cheapest["trainable_params"]
    # Recorded like a sweep: store rows, domain statistics, reports.
    rows = ResultStore(out1 / "results").trials()
    assert len(rows) == 5 and set(rows["domain"]) == {"clutter"}
    assert [r["domain"] for r in list_domain_stats(out1)] == ["clutter"]
    md = (out1 / "report.md").read_text()
    for section in ("Domain shift", "Pilot results", "Recommendation", "Failure modes seen", "Runner-up"):
        assert section in md
    assert "<table>" in (out1 / "report.html").read_text()

    street = write_synthetic_coco("street", tmp_path / "street", 6, seed=4, image_size=64)
    out2 = tmp_path / "sel_street"
    rc = main(["select", "--data", str(street), "--images", str(street.parent / "images"), "--out", str(out2),
               "--json", "--history", str(out1), "--pilot", "lora:4", "--latency-budget-ms", "0.001",
               "--min-ap-fraction", "0.5", "--accept-untrained", *TINY])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == EXIT_INFEASIBLE
    assert "no method meets the budgets; closest:" in captured.err
    doc2 = json.loads(captured.out)
    assert doc2["neighbours"][0]["domain"] == "clutter"
    assert doc2["known_shifts"].keys() == {"clutter"}
    first = doc2["queue"][0]
    assert first["origin"] == "neighbour clutter"
    # Nothing on clutter meets 0.001 ms either, so its best-AP configuration is the warm start.
    best_row = max(pilot, key=lambda p: (p["ap"], -p["trainable_params"]))
    expected = next(q["params"] for q, p in zip(doc["queue"], pilot) if p is best_row)
    assert first["params"] == expected
    origins = [q["origin"] for q in doc2["queue"]]
    assert origins == (["neighbour clutter"] if expected == doc["queue"][0]["params"] else
                       ["neighbour clutter", "pilot"])  # fmt: skip
    assert doc2["decision"]["feasible"] is False and doc2["decision"]["closest"] is not None

    # The same street data without --accept-untrained: nothing learned, no pick, exit 4.
    rc = main(["select", "--data", str(street), "--images", str(street.parent / "images"),
               "--out", str(tmp_path / "sel_none"), "--pilot", "lora:4,full_head", *TINY])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == EXIT_NOTHING_LEARNED
    assert "no pilot learned anything" in captured.err and "too few iterations (1 per" in captured.err
    assert "too few training images (6" in captured.err and "Recommendation:" not in captured.out
    md = (tmp_path / "sel_none" / "report.md").read_text()
    assert "**No pilot learned anything**" in md


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-ap-fraction", "1.5"], "--min-ap-fraction"),
        (["--pilot", "lora"], "--pilot"),
        (["--param-budget-pct", "0"], "--param-budget-pct"),
        (["--eval-data", "x.json"], "--eval-data and --eval-images"),
        (["--history", "/nonexistent-history"], "--history"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = tmp_path / "d.json"
    data.write_text("{}")
    rc = main(
        ["select", "--data", str(data), "--images", str(tmp_path), "--out", str(tmp_path / "o"), *extra]
    )
    assert rc == 2
    assert message in capsys.readouterr().err
    missing = main(["select", "--data", str(tmp_path / "none.json"), "--images", str(tmp_path)])
    assert missing == 2 and "--data: not found" in capsys.readouterr().err
