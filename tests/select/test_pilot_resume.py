"""A pilot trial stopped at a halving rung and continued later is the same run as an uninterrupted one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from models.data.coco import write_synthetic_coco
from search.selection.decision import Budgets
from search.selection.outcome import SelectionSettings
from search.selection.pilots import trial_runner
from search.selection.warmstart import pilot_matrix


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_stopped_then_continued_equals_uninterrupted(tmp_path: Path) -> None:
    data = write_synthetic_coco("clutter", tmp_path / "clutter", 4, seed=3, image_size=64)
    settings = SelectionSettings(
        str(data),
        str(data.parent / "images"),
        Budgets(),
        iterations=4,
        lr=3e-3,
        image_size=64,
        device="cpu",
        trial_overrides={"num_train_images": 3, "num_eval_images": 1, "batch_size": 1, "latency_runs": 1},
    )
    run = trial_runner(settings)
    params = pilot_matrix("adapter:2", lr=3e-3, iterations=4)[0]
    whole = run(dict(params))
    state = tmp_path / "state"
    first = run(dict(params), stop_at=2, state_dir=str(state), eval_every=2)
    assert first["status"] == "completed" and first["iterations"] == 2
    assert (state / "trial_state.pt").is_file()
    rest = run(dict(params), stop_at=4, state_dir=str(state), eval_every=2)
    assert rest["resumed_from"] == 2 and rest["iterations"] == 4
    # Each rung reports the mean training loss of its last evaluation window (halving's signal).
    assert math.isfinite(first["rung_loss"]) and first["rung_loss"] > 0
    assert math.isfinite(rest["rung_loss"]) and rest["rung_loss"] != first["rung_loss"]
    # Same weights after 4 iterations: same loss and the same evaluation.
    assert rest["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-5)
    for key in ("ap", "ap50"):
        a, b = rest[key], whole[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)
