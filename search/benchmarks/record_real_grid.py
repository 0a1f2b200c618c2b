"""Record REAL trial results for ``peftsweep bench search``: every point of :data:`REAL_GRID` x
:data:`REAL_LRS` trained and evaluated with ``models.trial`` (tiny CPU settings), written as a CSV
in the recorded-table format (flat search parameters, ap, trainable_pct, latency_ms, source=real)
plus a ``.json`` sidecar saying how it was made.

Usage: ``python -m search.benchmarks.record_real_grid --base runs/base/base.pt --out FILE [--jobs 2]``.

Two phases:

1. Latency, once per *deployed architecture* (:func:`architecture_key`): merged LoRA runs the base
   network's computation (``F.linear`` on merged weights) whatever its rank/alpha/targets, the head
   baselines are the base network, adapters differ by repetitions/placement/residual/reduction; the
   learning rate never changes it. One model per architecture plus two more copies of the base
   network are timed in :data:`LATENCY_ROUNDS` rounds; in each round every model is timed in a
   warm block (``measure_latency``: warm-up, then :data:`LATENCY_RUNS` passes, median), so load
   that drifts during the recording hits all architectures alike, and the latency is the median of
   its round medians, rounded to 0.1 ms. The spread between the base network's copies (same
   computation, different memory) is kept in the sidecar as the measurement's resolution; the
   trial's own quick measurement is kept as ``trial_latency_ms``.
2. Training + evaluation of every grid point with each of :data:`REAL_SEEDS` (data order,
   augmentation and adapter initialisation differ); ``ap``/``ap50`` are the mean over seeds and
   ``ap_sd`` their standard deviation; a point counts as failed if any seed failed. ``--jobs``
   worker processes with one torch thread each; a finished run is appended to ``FILE.partial``
   so an interrupted recording continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from search.config import SearchSpaceConfig
from search.engine.space import PARAM_COLUMNS, grid_points, method_kwargs

__all__ = [
    "aggregate",
    "REAL_GRID",
    "REAL_LRS",
    "REAL_SETTINGS",
    "LATENCY_RUNS",
    "REAL_SEEDS",
    "architecture_key",
    "LATENCY_ROUNDS",
    "measure_architectures",
    "main",
]

REAL_GRID = SearchSpaceConfig.model_validate(
    {
        "methods": ["lora", "adapter", "full_head", "decoder_only", "class_mask"],
        "lora": {
            "rank": [2, 4, 8, 16],
            "alpha": [4.0, 8.0, 16.0],
            "targets": [["msda"], ["msda", "dec_self_qv"]],
        },
        "adapter": {
            "repetitions": [1, 2, 3, 4],
            "placement": [["enc_self", "dec_self", "dec_cross"]],
            "residual": ["kappa", "lambda", "kappa+lambda"],
            "reduction": [4, 8],
        },
        "iterations": [80],
    }
)
REAL_LRS = [5e-4, 1e-3, 3e-3]
# The demo sweep's trial settings (search.cli.sweep.demo_config) on its easier domain, with twice its
# iterations and four times its evaluation images: at 40 iterations and 8-16 images the spread of AP
# between seeds of one configuration (sd ~2.5 AP) was as large as the differences between them.
REAL_SETTINGS: dict[str, Any] = {
    "model": "maskdino_tiny",
    "domain": "clean",
    "num_train_images": 32,
    "num_eval_images": 32,
    "batch_size": 2,
    "latency_runs": 1,  # replaced by the per-architecture measurement (phase 1)
    "latency_warmup": 0,
    "seed": 0,
    "device": "cpu",
    "threads": 1,
}
REAL_SEEDS = [0, 1, 2]
LATENCY_ROUNDS = 7
LATENCY_RUNS = 10
LATENCY_WARMUP = 2
LATENCY_RESOLUTION_MS = 0.1
_BASE_COPIES = 3
_METRICS = ("ap", "ap50", "trainable_params", "total_params", "trainable_pct", "train_seconds")


def architecture_key(p: dict[str, Any]) -> str:
    """:func:`models.latency.deployed_architecture` of a grid point (flat search parameters)."""
    from models.latency import deployed_architecture
    from models.peft import build_method_config

    method, kwargs = method_kwargs(p)
    return deployed_architecture(build_method_config(method, **kwargs))


def _spec(p: dict[str, Any], base: str | None, seed: int = 0) -> dict[str, Any]:
    method, kwargs = method_kwargs(p)
    return {
        **REAL_SETTINGS,
        "seed": seed,
        "base_checkpoint": base,
        "method": method,
        "method_params": kwargs,
        "lr": float(p["lr"]),
        "iterations": int(p["iterations"]),
    }


def measure_architectures(
    points: list[dict[str, Any]],
    base: str | None,
    rounds: int = LATENCY_ROUNDS,
    runs: int = LATENCY_RUNS,
    warmup: int = LATENCY_WARMUP,
) -> tuple[dict[str, float], float]:
    """(deployed latency in ms per :func:`architecture_key`, spread in ms between copies of the
    base network); see the module docstring for the protocol."""
    import copy
    import statistics

    import torch

    from models.latency import deployed_copy, measure_latency
    from models.trial import prepare_trial

    torch.set_num_threads(1)
    reps: dict[str, dict[str, Any]] = {}
    for p in points:
        reps.setdefault(architecture_key(p), p)
    models = {k: deployed_copy(prepare_trial(_spec(p, base)).model) for k, p in reps.items()}
    if "base" in models:
        for i in range(1, _BASE_COPIES):
            models[f"base#{i}"] = copy.deepcopy(models["base"])
    size = int(REAL_SETTINGS.get("image_size", 128))
    medians: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            medians[k].append(measure_latency(m, size, "cpu", warmup=warmup, runs=runs).median_ms)
    latency = {k: statistics.median(v) for k, v in medians.items()}
    copies = [v for k, v in latency.items() if k.split("#")[0] == "base"]
    spread = max(copies) - min(copies) if copies else float("nan")
    return {k: v for k, v in latency.items() if "#" not in k}, spread


def _run_point(p: dict[str, Any], base: str | None, seed: int) -> dict[str, Any]:
    from models.trial import run_trial

    t0 = time.time()
    rec = run_trial(_spec(p, base, seed)).to_dict()
    row = {k: p.get(k, "") for k in PARAM_COLUMNS}
    row.update({k: rec[k] for k in _METRICS})
    row.update(
        {
            "seed": seed,
            "trial_latency_ms": rec["latency_ms"],
            "status": rec["status"],
            "wall_seconds": round(time.time() - t0, 2),
        }
    )
    return row


def _ident(p: dict[str, Any]) -> str:
    return json.dumps({k: p.get(k, "") for k in PARAM_COLUMNS}, sort_keys=True)


def _run_ident(p: dict[str, Any], seed: int) -> str:
    return f"{_ident(p)}#{seed}"


def aggregate(runs: list[dict[str, Any]], latency_ms: float) -> dict[str, Any]:
    """One table row from the runs (one per seed) of a grid point."""
    import math
    import statistics

    first = runs[0]
    row = {k: first.get(k, "") for k in PARAM_COLUMNS}
    ok = all(r["status"] == "completed" and math.isfinite(float(r["ap"])) for r in runs)
    aps = [float(r["ap"]) for r in runs]
    row.update(
        {
            "ap": statistics.fmean(aps) if ok else math.nan,
            "ap_sd": statistics.stdev(aps) if ok and len(aps) > 1 else math.nan,
            "ap50": statistics.fmean(float(r["ap50"]) for r in runs) if ok else math.nan,
            "seeds": len(runs),
            "trainable_params": first["trainable_params"],
            "total_params": first["total_params"],
            "trainable_pct": first["trainable_pct"],
            "latency_ms": round(round(latency_ms / LATENCY_RESOLUTION_MS) * LATENCY_RESOLUTION_MS, 6),
            "trial_latency_ms": statistics.median(float(r["trial_latency_ms"]) for r in runs),
            "train_seconds": statistics.fmean(float(r["train_seconds"]) for r in runs),
            "status": "completed" if ok else "failed",
            "source": "real",
        }
    )
    return row


def _sidecar(
    a: argparse.Namespace, n: int, latencies: dict[str, float], spread: float, seconds: float
) -> dict[str, Any]:
    base_info: Any = None
    if a.base:
        info = Path(a.base).with_name("pretrain.json")
        base_info = json.loads(info.read_text()) if info.exists() else {"path": a.base}
    return {
        "what": "REAL trial results for 'peftsweep bench search': every point of "
        "search.benchmarks.record_real_grid.REAL_GRID x REAL_LRS",
        "produced_by": (
            f"python -m search.benchmarks.record_real_grid --base <base.pt> --out {a.out} --jobs {a.jobs}"
        ),
        "grid_points": n,
        "seeds": REAL_SEEDS,
        "settings": REAL_SETTINGS,
        "latency": (
            f"latency_ms: median over {LATENCY_ROUNDS} rounds of the median of {LATENCY_RUNS} warm passes "
            f"(warmup {LATENCY_WARMUP}) per deployed architecture, batch 1, 128x128, 1 torch thread, "
            "rounded to latency_rounded_to_ms; "
            "trial_latency_ms: the trials' own 1-run value (median over seeds)"
        ),
        "architecture_latency_ms": {k: round(v, 3) for k, v in sorted(latencies.items())},
        "identical_base_copies_spread_ms": round(spread, 4),
        "latency_rounded_to_ms": LATENCY_RESOLUTION_MS,
        "base_checkpoint": base_info,
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU",
        "record_minutes": round(seconds / 60, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="record real trial results for the search bench")
    ap.add_argument("--base", default=None, help="base checkpoint (models.pretrain output)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    t_start = time.time()
    out = Path(a.out)
    partial = out.with_name(out.name + ".partial")
    points = grid_points(REAL_GRID, REAL_LRS)

    lat_file = out.with_name(out.name + ".latency.json")
    if lat_file.exists():
        saved = json.loads(lat_file.read_text())
        latencies, spread = saved["latency_ms"], saved["spread_ms"]
    else:
        print(f"timing {len({architecture_key(p) for p in points})} deployed architectures", flush=True)
        latencies, spread = measure_architectures(points, a.base)
        lat_file.write_text(json.dumps({"latency_ms": latencies, "spread_ms": spread}, indent=1))
    for k, v in sorted(latencies.items()):
        print(f"  {k}: {v:.3f} ms", flush=True)
    print(f"  spread between {_BASE_COPIES} copies of the base network: {spread:.3f} ms", flush=True)

    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            r = json.loads(line)
            done[_run_ident(r, int(r.get("seed", 0)))] = r
    jobs = [(p, s) for p in points for s in REAL_SEEDS]
    todo = [(p, s) for p, s in jobs if _run_ident(p, s) not in done]
    print(f"{len(points)} grid points x {len(REAL_SEEDS)} seeds, {len(todo)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        futs = [pool.submit(_run_point, p, a.base, s) for p, s in todo]
        for f in as_completed(futs):
            r = f.result()
            with open(partial, "a") as fh:
                fh.write(json.dumps(r) + "\n")
            done[_run_ident(r, int(r.get("seed", 0)))] = r
            print(
                f"{len(done)}/{len(jobs)} {r['method']} seed {r['seed']} ap={r['ap']:.3f} "
                f"pct={r['trainable_pct']:.3f} ({r['wall_seconds']}s)",
                flush=True,
            )
    rows = [
        aggregate([done[_run_ident(p, s)] for s in REAL_SEEDS], latencies[architecture_key(p)])
        for p in sorted(points, key=_ident)
    ]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    side = out.with_suffix(".json")
    side.write_text(
        json.dumps(_sidecar(a, len(rows), latencies, spread, time.time() - t_start), indent=1) + "\n"
    )
    print(f"wrote {len(rows)} rows to {out} (+ {side.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
