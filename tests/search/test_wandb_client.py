"""W&B under Ray Client: the Tune callbacks run on the head node, where the driver's logger does not
exist. The callback opens its own logger from the sweep folder there, or says loudly that it cannot
(a warning and OUT/wandb/live_off.txt) and leaves the runs to the end-of-sweep pass from the store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.config import dump_config, parse_config
from search.engine.callbacks import WandbCallback
from search.results.wandb_log import active_logger


def _sweep_folder(out: Path) -> str:
    cfg = parse_config(
        {
            "name": "c",
            "domains": ["clean"],
            "output_dir": str(out),
            "wandb": {"enabled": True, "mode": "offline"},
        }
    )
    out.mkdir(parents=True)
    (out / "sweep.yaml").write_text(dump_config(cfg))
    (out / "sweep.json").write_text(json.dumps({"sweep_id": "c-1", "created": 0, "schema_version": 2}))
    return "c-1"


def test_callback_opens_its_own_logger_where_the_driver_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "out"
    sweep_id = _sweep_folder(out)
    assert active_logger(sweep_id) is None  # as on the head node under Ray Client
    cb = WandbCallback(sweep_id, "clean", out=str(out))
    trial = SimpleNamespace(trial_id="t1", config={"method": "lora", "lora_rank": 8, "lr": 1e-3})
    cb.on_trial_start(0, [], trial)
    try:
        assert active_logger(sweep_id) is not None
        runs = list((out / "wandb" / "wandb").glob(f"offline-run-*-{sweep_id}-t1"))
        assert len(runs) == 1
    finally:
        cb.on_experiment_end([])
    assert active_logger(sweep_id) is None  # closed with the experiment


def test_callback_says_loudly_when_it_cannot_log_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()  # no sweep.yaml: this node cannot open the sweep
    cb = WandbCallback("c-2", "clean", out=str(out))
    with caplog.at_level(logging.WARNING):
        cb.on_trial_start(0, [], SimpleNamespace(trial_id="t1", config={}))
    assert "W&B live logging is OFF for sweep c-2" in caplog.text
    assert "written from the store when the sweep ends" in (out / "wandb" / "live_off.txt").read_text()
    # Without `out` (the driver-side case) a missing logger is simply not logged to.
    WandbCallback("c-3", "clean").on_trial_start(0, [], SimpleNamespace(trial_id="t1", config={}))
