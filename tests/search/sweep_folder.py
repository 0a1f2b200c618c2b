"""A sweep output folder written without running anything: config, identity and store rows.

For the readers of a sweep (status, the interactive report, W&B from the store): cheap, exact and
with every trial state, including a running one. Times are fixed so elapsed/ETA are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.config import SweepConfig, dump_config, parse_config
from search.results.store import ResultStore

__all__ = ["CREATED", "make_config", "make_rows", "write_sweep_folder"]

CREATED = 1_800_000_000.0  # sweep.json's creation time; trial times count from here


def make_config(out: Path, trials: int = 8, results: str | None = None) -> SweepConfig:
    return parse_config(
        {
            "results": results,
            "name": "fake",
            "domains": ["clean", "xray"],
            "space": {
                "methods": ["lora", "adapter"],
                "lora": {"rank": [2, 4, 8, 16]},
                "adapter": {"repetitions": [1, 2, 3], "reduction": [4, 8]},
                "iterations": [40],
            },
            "constraints": [{"metric": "latency_ms", "op": "<=", "value": 13.0}],
            "budget": {"trials": trials, "concurrency": 2},
            "trial": {"function": "synthetic_trial:prepare", "eval_every": 10},
            "output_dir": str(out),
            "wandb": {"enabled": False, "mode": "offline"},
        }
    )


def _trial(domain: str, i: int, status: str, method: str, size: int, lr: float, ap: float) -> dict[str, Any]:
    if method == "lora":
        params: dict[str, Any] = {"lora_rank": size, "lora_alpha": 8.0, "lora_targets": "msda"}
        pct, lat = 0.05 * size, 10.0
    else:
        params = {"adapter_repetitions": size, "adapter_reduction": 4, "adapter_placement": "enc_self"}
        pct, lat = 0.5 * size, 10.0 + 1.5 * size
    start = CREATED + 10.0 * i
    row: dict[str, Any] = {
        "trial_id": f"{domain}_{i:02d}",
        "sweep_id": "fake-sweep",
        "domain": domain,
        "trial_number": i + 1,
        "status": status,
        "method": method,
        "lr": lr,
        "iterations": 40,
        # where training stood: stopped at MO-ASHA's rung 10, failed at 5, running at 20
        "iterations_done": {"completed": 40, "pruned": 10, "failed": 5, "running": 20}.get(status, 0),
        **params,
        "trainable_pct": pct,
        "latency_ms": lat,
        "started_at": start,
        "finished_at": None if status == "running" else start + 20.0,
    }
    if status in ("completed", "pruned"):
        row["ap"] = ap
    row["config_json"] = json.dumps({k: v for k, v in row.items() if k in ("method", "lr", *params)})
    return row


# (status, method, size, lr, ap) per trial; clean: 5 completed (front: 0, 1, 2), 1 pruned,
# 1 infeasible (latency 14.5 > 13), 1 running. xray: 3 completed, 1 failed.
_CLEAN = [
    ("completed", "lora", 2, 1e-3, 0.30),
    ("completed", "lora", 8, 1e-3, 0.36),
    ("completed", "adapter", 1, 2e-3, 0.40),
    ("completed", "lora", 16, 3e-4, 0.33),  # dominated by trial 1 (lower AP, more params, same latency)
    ("pruned", "adapter", 2, 1e-3, 0.10),
    ("infeasible", "adapter", 3, 1e-3, 0.0),
    ("completed", "adapter", 2, 3e-4, 0.38),  # dominated by trial 2
    ("running", "lora", 4, 1e-3, 0.0),
]
_XRAY = [
    ("completed", "lora", 4, 1e-3, 0.20),
    ("failed", "adapter", 1, 1e-3, 0.0),
    ("completed", "adapter", 2, 2e-3, 0.25),
    ("completed", "lora", 8, 2e-3, 0.19),  # dominated by trial 0
]
FRONT = {"clean": {"clean_00", "clean_01", "clean_02"}, "xray": {"xray_00", "xray_02"}}


def make_rows() -> list[dict[str, Any]]:
    rows = [_trial("clean", i, *t) for i, t in enumerate(_CLEAN)]
    return rows + [_trial("xray", i, *t) for i, t in enumerate(_XRAY)]


def write_sweep_folder(
    out: Path, rows: list[dict[str, Any]] | None = None, trials: int = 8, results: str | None = None
) -> SweepConfig:
    """The folder; ``results`` (a path or URI): the store elsewhere, named in the config (as
    ``results:`` in a sweep YAML) and in sweep.json, as the engine writes them."""
    config = make_config(out, trials, results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(dump_config(config))
    meta = {"sweep_id": "fake-sweep", "created": CREATED, "schema_version": 1}
    (out / "sweep.json").write_text(json.dumps(meta | ({"results": results} if results else {})))
    ResultStore(results or out / "results").upsert_trials(make_rows() if rows is None else rows)
    return config
