"""The pre-slot gate and the latency profile in a real (tiny, CPU) sweep through models.trial:
an infeasible point never runs a trainable, one architecture has one latency figure across the
sweep (measured once in isolation, cached in OUT and in the user cache, reused by a later sweep),
and the final fronts are re-measured for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from search.config import parse_config
from search.engine.runner import run_sweep
from search.engine.studies import optuna_storage

pytestmark = pytest.mark.slow

DECODER = {"method": "decoder_only", "lr": 1e-3, "iterations": 4}


def _config(out: Path, trials: int = 3) -> Any:
    return parse_config(
        {
            "name": "gate",
            "model": {"name": "maskdino_tiny"},
            "domains": ["clean"],
            "space": {
                "methods": ["lora", "decoder_only"],
                "lora": {"rank": [2], "targets": [["msda"]]},
                "lr": {"low": 1e-3, "high": 1e-3},
                "iterations": [4],
            },
            # decoder_only trains ~28 % of the tiny model, LoRA r2 well under 10 %.
            "constraints": [{"metric": "trainable_pct", "op": "<=", "value": 10.0}],
            "budget": {"trials": trials, "concurrency": 2, "max_failures": 0},
            # The first point asked is the infeasible one: a rejection is certain, not sampled.
            "sampler": {"name": "tpe", "seed": 0, "initial_points": [DECODER]},
            "early_stopping": {"enabled": False},
            "trial": {
                "function": "search.engine.model_trial:prepare",
                "eval_every": 2,
                "latency_per_architecture": True,
                "extra": {
                    "num_train_images": 4,
                    "num_eval_images": 2,
                    "batch_size": 1,
                    "image_size": 64,
                    "latency_runs": 3,
                    "latency_warmup": 1,
                    "eval_batch_size": 2,
                },
            },
            "output_dir": str(out),
        }
    )


def test_gate_and_latency_profile_in_a_real_sweep(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("models.trial")
    monkeypatch.setenv("PEFTSWEEP_CACHE_DIR", str(tmp_path / "user-cache"))
    res = run_sweep(_config(tmp_path / "a"), quiet=True, report=True)
    df = res.trials
    rejected = df[df.status == "infeasible"]
    trained = df[df.status != "infeasible"]
    # The budget counts trained trials only; every rejected point is a decoder_only one.
    assert len(trained) == 3 and set(trained.status) == {"completed"}, df[["status", "method"]]
    assert set(trained.method) == {"lora"}
    assert len(rejected) >= 1 and set(rejected.method) == {"decoder_only"}
    assert all(str(r).startswith("rejected before training: trainable_pct=") for r in rejected.stop_reason)
    assert (rejected.iterations_done == 0).all() and (rejected.trainable_pct > 10).all()
    # ... and never ran a trainable: Tune knows exactly the trained trials (its trial folders).
    tune_trials = [p for p in (res.output_dir / "tune" / "sweep").iterdir() if p.is_dir()]
    assert len(tune_trials) == 3, tune_trials
    # Optuna learned it as COMPLETE with its constraint value (what its constrained samplers read).
    study = optuna.load_study(
        study_name=f"{res.sweep_id}-clean",
        storage=optuna_storage(str(res.output_dir / "optuna" / "journal.log")),
    )
    told = [t for t in study.get_trials() if t.params.get("method") == "decoder_only"]
    assert told and all(t.state == optuna.trial.TrialState.COMPLETE for t in told)
    assert all(t.user_attrs["trainable_pct"] > 10 for t in told)
    # Never in a front.
    assert set(res.fronts["clean"].front.trial_id).isdisjoint(set(rejected.trial_id))

    # One latency figure per architecture (LoRA merged = the base network): the profile's.
    profile = json.loads((res.output_dir / "state" / "latency_profile.json").read_text())
    user = json.loads((tmp_path / "user-cache" / "latency_profile.json").read_text())
    assert len(profile) == 1 and set(profile) == set(user)
    (entry,) = profile.values()
    assert set(trained.latency_ms) == {entry["median_ms"]}
    assert set(rejected.latency_ms.dropna()) <= {entry["median_ms"]}  # params rejected it first
    # Final fronts re-measured in isolation, and the report says what was rejected and why.
    check = json.loads((res.output_dir / "latency_check.json").read_text())
    assert check["members"] and all(m["remeasured_ms"] > 0 for m in check["members"])
    html = (res.output_dir / "report" / "index.html").read_text()
    assert f"{len(rejected)} points rejected before training" in html
    assert "trainable_pct &lt;= 10" in html and "re-measured" in html

    # peftsweep status: the rejected points are apart from the trained budget.
    from search.results.status import sweep_status

    (st,) = sweep_status(res.output_dir).studies
    assert st.rejected == len(rejected) and st.finished == 3 and st.state == "finished"

    # A later sweep reuses the user cache: the same figure, nothing measured again.
    res2 = run_sweep(_config(tmp_path / "b", trials=1), quiet=True, report=False)
    done2 = res2.trials[res2.trials.status == "completed"]
    assert set(done2.latency_ms) == {entry["median_ms"]}
