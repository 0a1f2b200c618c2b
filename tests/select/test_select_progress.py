"""Progress of `peftsweep select`'s pilot: planned trial-iterations, rung/candidates text, ETA;
plain lines off a terminal, nothing when off -- driven by the real pilot loop with a fake trial."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from search.selection.candidates import candidate_points
from search.selection.decision import Budgets
from search.selection.halving import HalvingSchedule
from search.selection.pilots import _run_pilot
from search.selection.progress import PilotProgress, planned_iterations
from search.selection.warmstart import DEFAULT_PILOT

AP = {"lora": 10.0, "adapter": 20.0, "full_head": 15.0}


def _fake_point(params: Mapping[str, Any], stop_at: int | None = None, **_: Any) -> dict[str, Any]:
    """AP by method, higher for more iterations and larger rank/repetitions (deterministic)."""
    size = float(params.get("lora_rank") or params.get("adapter_repetitions") or 1)
    return {
        "status": "completed",
        "ap": AP[str(params["method"])] + size + 0.01 * float(stop_at or 0),
        "iterations": int(stop_at or 0),
        "trainable_params": 100,
        "trainable_pct": 1.0,
        "latency_ms": 1.0,
    }


def test_planned_iterations_by_hand() -> None:
    assert planned_iterations([20, 40, 80], [5, 3, 2]) == 5 * 20 + 3 * 20 + 2 * 40
    assert planned_iterations([80], [5], extra_runs=2) == 5 * 80 + 2 * 80


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0  # every reading one second later: elapsed grows with the work
        return self.t


def test_pilot_progress_lines(tmp_path: Path) -> None:
    out = io.StringIO()  # not a terminal: plain lines
    progress = PilotProgress("auto", stream=out, interval=1e9, clock=_Clock())
    # The full head (the fake's third-best method) is not kept past its rungs here, so the plan made
    # at the start (survivors by eta alone) is the one that runs; a kept reference re-plans per rung.
    schedule = HalvingSchedule.geometric(80, 3, 2.0, keep_reference=False)
    queue = candidate_points(DEFAULT_PILOT, [1e-3], 80)
    progress.start(schedule.rungs, len(queue), schedule)
    rows = _run_pilot(
        queue, _fake_point, "d", "sid", progress.print, schedule=schedule, budgets=Budgets(),
        state_root=tmp_path, progress=progress,
    )  # fmt: skip
    progress.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text  # no escape codes off a terminal
    # Rung starts are always shown, with what is left; 5 -> 3 -> 2 candidates.
    assert "rung 1/3 (20 it), 5 candidates left" in text
    assert "rung 2/3 (40 it), 3 candidates left" in text
    assert "rung 3/3 (80 it), 2 candidates left" in text
    # The plan held: 240 trial-iterations planned and done; the last line is complete, ETA 0.
    planned = 5 * 20 + 3 * 20 + 2 * 40
    last = text.strip().splitlines()[-1]
    assert f"{planned}/{planned} (100%)" in last and "eta 0s" in last
    # The pilot's own log lines went through the display, and its result is unchanged.
    assert "select: pilot 1/5" in text
    assert sum(1 for r in rows if r["finalist"]) == 2


def test_pilot_progress_eta_and_off() -> None:
    out = io.StringIO()
    clock = _Clock()
    progress = PilotProgress("lines", stream=out, interval=1e9, clock=clock)
    progress.start([10, 20], 4, HalvingSchedule((10, 20)))  # 4 x 10 + 2 x 10 = 60
    progress.rung(0, 10, 4)
    progress.trial(10)
    progress.trial(10)  # 20 of 60 done
    eta = progress.display.eta("pilot")
    assert eta is not None and eta > 0
    assert "20/60" in progress.display.line("pilot")
    quiet = io.StringIO()
    off = PilotProgress("off", stream=quiet)
    off.start([10, 20], 4, HalvingSchedule((10, 20)))
    off.rung(0, 10, 4)
    off.trial(10)
    off.print("select: pilot 1/4 ...")
    off.close()
    assert quiet.getvalue() == ""


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_select_cli_progress_lines_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.data.coco import write_synthetic_coco
    from search.cli import main

    data = write_synthetic_coco("clean", tmp_path / "clean", 4, seed=3, image_size=64)
    args = [
        "select", "--data", str(data), "--images", str(data.parent / "images"), "--pilot", "lora:4,full_head",
        "--iterations", "2", "--rungs", "2", "--image-size", "64", "--num-train-images", "2",
        "--num-eval-images", "2", "--batch-size", "1", "--shift-images", "4", "--latency-runs", "1",
        "--device", "cpu", "--accept-untrained", "--min-ap-fraction", "0.5",
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    shown = capsys.readouterr().out
    # Off a terminal: plain progress lines (rung starts, the final count) and the per-trial lines.
    assert "select pilot" in shown and "rung 1/2 (1 it), 2 candidates left" in shown
    # 2 candidates x 2 iterations, then (default --seeds 2) both finalists once more at 2 iterations.
    assert "8/8 (100%)" in shown and "extra seeds: 2 runs of 2 it" in shown
    assert "select: pilot 1/2" in shown and "\x1b" not in shown
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert "select pilot" not in quiet.out + quiet.err and "select: pilot" not in quiet.out + quiet.err
    assert "Chosen:" in quiet.out  # the decision itself is still printed
