"""Record REAL trial results for ``peftsweep bench search``: every point of :data:`REAL_GRID`
trained and measured with ``models.trial.run_trial`` (tiny CPU settings), written as a CSV in the
recorded-table format (flat search parameters, ap, trainable_pct, latency_ms, source=real, ...).

Usage: ``python -m search.data.record_real_grid --base runs/base/base.pt --out FILE [--jobs 2]``.
Each point runs in a worker process with one torch thread; a finished point is appended to
``FILE.partial`` so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from search.config import SearchSpaceConfig
from search.space import PARAM_COLUMNS, grid_points, method_kwargs

__all__ = ["REAL_GRID", "REAL_LRS", "REAL_SETTINGS", "main"]

REAL_GRID = SearchSpaceConfig.model_validate(
    {
        "methods": ["lora", "adapter", "full_head", "decoder_only", "class_mask"],
        "lora": {"rank": [2, 4, 8, 16], "alpha": [8.0], "targets": [["msda"], ["msda", "dec_self_qv"]]},
        "adapter": {
            "repetitions": [1, 2, 3],
            "placement": [["enc_self", "dec_self", "dec_cross"]],
            "residual": ["kappa+lambda"],
            "reduction": [4, 8],
        },
        "iterations": [30],
    }
)
REAL_LRS = [1e-3, 3e-3]
REAL_SETTINGS: dict[str, Any] = {
    "model": "maskdino_tiny",
    "domain": "xray",
    "num_train_images": 32,
    "num_eval_images": 8,
    "batch_size": 2,
    "latency_runs": 5,
    "latency_warmup": 1,
    "seed": 0,
    "device": "cpu",
}
_METRICS = ("ap", "ap50", "trainable_params", "total_params", "trainable_pct", "latency_ms", "train_seconds")


def _run_point(p: dict[str, Any], base: str | None) -> dict[str, Any]:
    import torch

    from models.trial import run_trial

    torch.set_num_threads(1)
    method, kwargs = method_kwargs(p)
    t0 = time.time()
    rec = run_trial(
        {
            **REAL_SETTINGS,
            "base_checkpoint": base,
            "method": method,
            "method_params": kwargs,
            "lr": float(p["lr"]),
            "iterations": int(p["iterations"]),
        }
    ).to_dict()
    row = {k: p.get(k, "") for k in PARAM_COLUMNS}
    row.update({k: rec[k] for k in _METRICS})
    row.update({"status": rec["status"], "wall_seconds": round(time.time() - t0, 2), "source": "real"})
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="record real trial results for the search bench")
    ap.add_argument("--base", default=None, help="base checkpoint (models.pretrain output)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    out = Path(a.out)
    partial = out.with_name(out.name + ".partial")
    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            r = json.loads(line)
            done[json.dumps({k: r[k] for k in PARAM_COLUMNS}, sort_keys=True)] = r
    points = grid_points(REAL_GRID, REAL_LRS)
    todo = [
        p for p in points if json.dumps({k: p.get(k, "") for k in PARAM_COLUMNS}, sort_keys=True) not in done
    ]
    print(f"{len(points)} grid points, {len(todo)} to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        futs = [pool.submit(_run_point, p, a.base) for p in todo]
        for f in as_completed(futs):
            r = f.result()
            with open(partial, "a") as fh:
                fh.write(json.dumps(r) + "\n")
            done[json.dumps({k: r[k] for k in PARAM_COLUMNS}, sort_keys=True)] = r
            print(
                f"{len(done)}/{len(points)} {r['method']} ap={r['ap']:.3f} pct={r['trainable_pct']:.3f} "
                f"lat={r['latency_ms']:.1f} ({r['wall_seconds']}s)",
                flush=True,
            )
    rows = sorted(done.values(), key=lambda r: json.dumps({k: r[k] for k in PARAM_COLUMNS}, sort_keys=True))
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    print(f"wrote {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
