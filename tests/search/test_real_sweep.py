"""A real (tiny) sweep through models.trial on local Ray: LoRA and adapters on a synthetic domain."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from search.config import parse_config
from search.engine.runner import run_sweep

pytestmark = pytest.mark.slow


def test_real_tiny_sweep(ray_session: None, tmp_path: Path) -> None:
    pytest.importorskip("models.trial")
    cfg = parse_config(
        {
            "name": "real",
            "model": {"name": "maskdino_tiny"},
            "domains": ["clean"],
            "space": {
                "methods": ["lora", "adapter"],
                "lora": {"rank": [2], "targets": [["msda"]]},
                "adapter": {"repetitions": [1], "reduction": [8]},
                "lr": {"low": 1e-3, "high": 1e-3},
                "iterations": [4],
            },
            "budget": {"trials": 2, "concurrency": 2, "max_failures": 0},
            "sampler": {"name": "random", "seed": 0},
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
                    "latency_runs": 1,
                    "latency_warmup": 0,
                    "eval_batch_size": 2,
                },
            },
            "output_dir": str(tmp_path / "out"),
        }
    )
    res = run_sweep(cfg, quiet=True, report=False)
    df = res.trials
    assert len(df) == 2 and set(df.status) == {"completed"}, df[["status", "error"]].to_dict("records")
    for rec in df.to_dict(orient="records"):
        assert rec["iterations_done"] == 4
        assert 0 < rec["trainable_params"] < rec["total_params"]
        assert rec["trainable_pct"] == pytest.approx(100 * rec["trainable_params"] / rec["total_params"])
        assert rec["latency_ms"] > 0 and math.isfinite(rec["ap"]) and 0 <= rec["ap"] <= 100
    from search.results.store import ResultStore

    inter = ResultStore(res.output_dir / "results").intermediate()
    assert sorted(inter.iteration.unique().tolist()) == [2, 4]  # every eval_every iterations
    assert len(res.fronts["clean"].front) >= 1
    # latency measured once per deployed architecture (search.engine.latency_cache), saved for resume
    import json

    cached = json.loads((res.output_dir / "state" / "latency.json").read_text())
    archs = {"base" if m == "lora" else "adapter" for m in df.method}
    assert len(cached) == len(archs)
    assert set(df.latency_ms) == {v["median_ms"] for v in cached.values()}
