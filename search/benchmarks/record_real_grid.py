"""Record REAL trial results for the benchmarks: every point of a grid trained and evaluated with
``models.trial`` (tiny CPU settings), written as a CSV in the recorded-table format (flat search
parameters, ap, ap_sd, trainable_pct, latency_ms, source=real) plus a ``.json`` sidecar saying how
it was made, and (with ``--eval-every``) the AP curve of every run in ``<stem>.curves.csv``.

Two grids:

- ``search`` (:data:`REAL_GRID` x :data:`REAL_LRS`, clean domain, no curves): the table of
  ``peftsweep bench search`` (``tables/recorded_trials.csv``).
- ``select`` (:data:`SELECT_GRID` x :data:`SELECT_LRS` with :data:`SELECT_SETTINGS`, one run per
  synthetic domain, AP every 40 iterations): the tables of ``peftsweep bench select``
  (``tables/select_<domain>.csv``). Every method family at every learning rate, with LoRA/adapter
  settings equal to ``peftsweep select``'s pilot (sweep-space defaults), so each pilot
  configuration is a grid point.

Usage::

    python -m search.benchmarks.record_real_grid --base runs/base/base.pt --out FILE [--jobs 2]
    python -m search.benchmarks.record_real_grid --grid select --domain xray --eval-every 40 \\
        --base runs/base/base.pt --out search/benchmarks/tables/select_xray.csv --jobs 1
    python -m search.benchmarks.record_real_grid --distances --base runs/base/base.pt \\
        --out search/benchmarks/tables/select_domains.json

``--write-only`` writes the tables from the runs finished so far (``FILE.partial``) without
training: the grid points whose every seed finished, the sidecar saying how many are missing.
``--distances`` records the Fréchet distance between the backbone features of every pair of
synthetic domains (and ``source``) with the base -- the neighbour order ``bench select``'s warm
start uses, measured the way ``peftsweep select`` measures it (:mod:`search.selection.shift`).

Phases:

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
2. With ``--eval-every``: the AP of the untrained model (the base with the domain's freshly
   initialised class head, i.e. any PEFT method before its first step) per seed, kept in the
   sidecar as ``untrained_ap`` -- the floor a run must clear to have learned anything.
3. Training + evaluation of every grid point with each of :data:`REAL_SEEDS` (data order,
   augmentation and adapter initialisation differ); ``ap``/``ap50`` are the mean over seeds and
   ``ap_sd`` their standard deviation; a point counts as failed if any seed failed. Intermediate
   evaluations restore the training random streams (``models.trial``), so a run's final AP is the
   one it would have without them. ``--jobs`` worker processes with one torch thread each (1: in
   this process); a finished run is appended to ``FILE.partial`` so an interrupted recording
   continues where it stopped.
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
    "curve_rows",
    "CURVE_COLUMNS",
    "GRIDS",
    "REAL_GRID",
    "REAL_LRS",
    "REAL_SETTINGS",
    "LATENCY_RUNS",
    "REAL_SEEDS",
    "SELECT_SETTINGS",
    "SELECT_DOMAINS",
    "SELECT_GRID",
    "SELECT_LRS",
    "architecture_key",
    "curves_path",
    "record_distances",
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
# bench select's grid: the pilot's configurations (LoRA r4/r8, adapters x2/x3, full head) and both
# partial heads (class + mask embeddings; the decoder), so each of the paper's four method families
# has at least two points, at one learning rate, 3e-3 (the best of 5e-4/1e-3/3e-3 for every family
# on the search table, recorded_trials.csv). LoRA alpha/targets and adapter placement/residual/
# reduction are the sweep space's defaults -- what `peftsweep select`'s pilot trains -- so the
# pilot's points and the rules of thumb are grid points. 7 points x 3 seeds x 4 domains is what a
# 2-core machine shared by four people recorded in the time there was (decoder_only was added after
# clean and xray had their first six points: a re-run with the same --out trains only new points).
SELECT_GRID = SearchSpaceConfig.model_validate(
    {
        "methods": ["lora", "adapter", "full_head", "class_mask", "decoder_only"],
        "lora": {"rank": [4, 8], "alpha": [8.0]},
        "adapter": {"repetitions": [2, 3]},
        # 320, not the search grid's 80: at 80 iterations on 32 images the pilots' AP was within
        # seed noise of the untrained model on three of four domains (nothing to select between).
        "iterations": [320],
    }
)
SELECT_LRS = [3e-3]
SELECT_DOMAINS = ("clean", "clutter", "xray", "street")
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
# The select grids train 4x longer on twice the images and evaluate on twice the images (seed-to-seed
# AP spread at 32 eval images was as large as the differences select has to resolve).
SELECT_SETTINGS: dict[str, Any] = {**REAL_SETTINGS, "num_train_images": 64, "num_eval_images": 64}
GRIDS: dict[str, tuple[SearchSpaceConfig, list[float], dict[str, Any]]] = {
    "search": (REAL_GRID, REAL_LRS, REAL_SETTINGS),
    "select": (SELECT_GRID, SELECT_LRS, SELECT_SETTINGS),
}
REAL_SEEDS = [0, 1, 2]
LATENCY_ROUNDS = 7
LATENCY_RUNS = 10
LATENCY_WARMUP = 2
LATENCY_RESOLUTION_MS = 0.1
_BASE_COPIES = 3
_METRICS = ("ap", "ap50", "trainable_params", "total_params", "trainable_pct", "train_seconds")
# One row per evaluation of one run in <stem>.curves.csv (after the parameter columns).
CURVE_COLUMNS = ("domain", "seed", "iteration", "ap", "ap50", "loss", "status")


def curves_path(table: str | os.PathLike[str]) -> Path:
    """``select_clean.csv`` -> ``select_clean.curves.csv`` (the per-evaluation AP of every run)."""
    p = Path(table)
    return p.with_name(p.stem + ".curves.csv")


def architecture_key(p: dict[str, Any]) -> str:
    """:func:`models.latency.deployed_architecture` of a grid point (flat search parameters)."""
    from models.latency import deployed_architecture
    from models.peft import build_method_config

    method, kwargs = method_kwargs(p)
    return deployed_architecture(build_method_config(method, **kwargs))


def _spec(
    p: dict[str, Any],
    base: str | None,
    seed: int = 0,
    domain: str = "clean",
    eval_every: int = 0,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    method, kwargs = method_kwargs(p)
    return {
        **(settings or REAL_SETTINGS),
        "domain": domain,
        "seed": seed,
        "eval_every": eval_every,
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
    domain: str = "clean",
    settings: dict[str, Any] | None = None,
) -> tuple[dict[str, float], float]:
    """(deployed latency in ms per :func:`architecture_key`, spread in ms between copies of the
    base network), at the grid's ``settings`` (image size); see the module docstring for the protocol."""
    import copy
    import statistics

    import torch

    from models.latency import deployed_copy, measure_latency
    from models.trial import prepare_trial

    torch.set_num_threads(1)
    reps: dict[str, dict[str, Any]] = {}
    for p in points:
        reps.setdefault(architecture_key(p), p)
    settings = settings or REAL_SETTINGS
    models = {
        k: deployed_copy(prepare_trial(_spec(p, base, domain=domain, settings=settings)).model)
        for k, p in reps.items()
    }
    if "base" in models:
        for i in range(1, _BASE_COPIES):
            models[f"base#{i}"] = copy.deepcopy(models["base"])
    size = int(settings.get("image_size", 128))
    medians: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            medians[k].append(measure_latency(m, size, "cpu", warmup=warmup, runs=runs).median_ms)
    latency = {k: statistics.median(v) for k, v in medians.items()}
    copies = [v for k, v in latency.items() if k.split("#")[0] == "base"]
    spread = max(copies) - min(copies) if copies else float("nan")
    return {k: v for k, v in latency.items() if "#" not in k}, spread


def _untrained_ap(
    point: dict[str, Any], base: str | None, seed: int, domain: str, settings: dict[str, Any] | None = None
) -> float:
    """AP of the prepared, untrained model (LoRA's B and the adapters' up-projections start at 0,
    so every PEFT method is the base with the domain's class head here)."""
    import torch

    from models.trial import prepare_trial

    torch.set_num_threads(1)
    prepared = prepare_trial(_spec(point, base, seed, domain, settings=settings))
    return float(prepared.evaluate().to_dict()["ap"])


def record_distances(base: str | None, out: str | os.PathLike[str], num_images: int = 64) -> dict[str, Any]:
    """Fréchet distances between the synthetic domains' pooled backbone features (``--distances``)."""
    import torch

    from search.selection.domain_stats import build_feature_model, domain_stats_from_images, synthetic_images
    from search.selection.shift import frechet_distance

    torch.set_num_threads(1)
    model = build_feature_model(str(REAL_SETTINGS["model"]), base)
    names = ("source", *SELECT_DOMAINS)
    stats = {d: domain_stats_from_images(model, synthetic_images(d, num_images, seed=1)) for d in names}
    frechet = {
        a: {b: round(float(frechet_distance(stats[a], stats[b])), 4) for b in names if b != a} for a in names
    }
    doc = {
        "what": "Fréchet distance between pooled backbone features of the synthetic domains "
        "(search.selection.shift), the neighbour order of bench select's warm start",
        "produced_by": "python -m search.benchmarks.record_real_grid --distances --base <base.pt> "
        f"--out {out}",
        "images_per_domain": num_images,
        "base_checkpoint": _base_info(base),
        "frechet": frechet,
        "date": time.strftime("%Y-%m-%d"),
    }
    _atomic_json(Path(out), doc)
    return doc


def borrow_latency(table: str | os.PathLike[str], keys: set[str]) -> dict[str, float]:
    """Deployed latency per :func:`architecture_key` from an earlier recorded table (``--latency-from``):
    latency depends on the architecture, not on the domain's images or the learning rate, so a
    recording made when the machine was busy can reuse one timed when it was idle."""
    out: dict[str, float] = {}
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            # '' is an unset column (e.g. a LoRA variant); lora_targets '' is the default target set.
            key = architecture_key({k: v for k, v in row.items() if v != "" or k == "lora_targets"})
            if key in keys and key not in out and row.get("latency_ms"):
                out[key] = float(row["latency_ms"])
    return out


def _base_info(base: str | None) -> Any:
    if not base:
        return None
    info = Path(base).with_name("pretrain.json")
    return json.loads(info.read_text()) if info.exists() else {"path": base}


def _run_point(
    p: dict[str, Any],
    base: str | None,
    seed: int,
    domain: str = "clean",
    eval_every: int = 0,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from models.trial import run_trial

    curve: list[dict[str, float]] = []

    def report(iteration: int, metrics: dict[str, float]) -> bool:
        curve.append(
            {
                "iteration": int(iteration),
                "ap": float(metrics["ap"]),
                "ap50": float(metrics["ap50"]),
                "loss": float(metrics["loss"]),
            }
        )
        return False

    t0 = time.time()
    spec = _spec(p, base, seed, domain, eval_every, settings)
    rec = run_trial(spec, report=report if eval_every else None).to_dict()
    row = {k: p.get(k, "") for k in PARAM_COLUMNS}
    row.update({k: rec[k] for k in _METRICS})
    if (
        eval_every
        and rec["status"] == "completed"
        and (not curve or curve[-1]["iteration"] != rec["iterations"])
    ):
        # The final evaluation when iterations is not a multiple of eval_every.
        curve.append(
            {
                "iteration": int(rec["iterations"]),
                "ap": rec["ap"],
                "ap50": rec["ap50"],
                "loss": rec["final_loss"],
            }
        )
    row.update(
        {
            "domain": domain,
            "seed": seed,
            "trial_latency_ms": rec["latency_ms"],
            "status": rec["status"],
            "curve": curve,
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
    if "domain" in first:
        row["domain"] = first["domain"]
    return row


def curve_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-format curve rows (parameter columns + :data:`CURVE_COLUMNS`) of the given runs."""
    out: list[dict[str, Any]] = []
    for r in runs:
        params = {k: r.get(k, "") for k in PARAM_COLUMNS}
        for c in r.get("curve") or []:
            out.append(
                {
                    **params,
                    "domain": r.get("domain", ""),
                    "seed": r["seed"],
                    "iteration": c["iteration"],
                    "ap": c["ap"],
                    "ap50": c["ap50"],
                    "loss": c["loss"],
                    "status": r["status"],
                }
            )
    return out


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({model}), no GPU"


def _sidecar(
    a: argparse.Namespace,
    n: int,
    latencies: dict[str, float],
    spread: float,
    seconds: float,
    untrained: dict[str, float] | None,
    seeds: list[int],
) -> dict[str, Any]:
    base_info = _base_info(a.base)
    grid_name = "REAL_GRID x REAL_LRS" if a.grid == "search" else "SELECT_GRID x SELECT_LRS"
    use = "peftsweep bench search" if a.grid == "search" else "peftsweep bench select"
    cmd = f"python -m search.benchmarks.record_real_grid --grid {a.grid} --domain {a.domain}"
    if a.eval_every:
        cmd += f" --eval-every {a.eval_every}"
    if a.latency_from:
        cmd += f" --latency-from {a.latency_from}"
    if seeds != REAL_SEEDS:
        cmd += f" --seeds {a.seeds}"
    side: dict[str, Any] = {
        "what": f"REAL trial results for '{use}': every point of "
        f"search.benchmarks.record_real_grid.{grid_name} on the synthetic domain {a.domain!r}",
        "produced_by": f"{cmd} --base {a.base or '<base.pt>'} --out {a.out} --jobs {a.jobs}",
        "grid_points": n,
        "domain": a.domain,
        "seeds": seeds,
        "settings": {**GRIDS[a.grid][2], "domain": a.domain, "eval_every": a.eval_every},
        "columns": (
            "one row per grid point: the flat search parameters (search.engine.space.PARAM_COLUMNS), "
            "ap/ap50 = mean over seeds of the final COCO mask AP (0-100), ap_sd = its sample standard "
            "deviation, trainable_pct, latency_ms (below), status (failed if any seed failed)"
        ),
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
        "machine": _machine(),
        "record_minutes": round(seconds / 60, 1),
        "record_minutes_is": "the sum of the recorded runs' wall times (one run at a time)",
        "date": time.strftime("%Y-%m-%d"),
    }
    if a.eval_every:
        side["curves"] = {
            "file": curves_path(a.out).name,
            "columns": (
                "one row per evaluation of one run (grid point x seed): the parameter columns, then "
                f"{', '.join(CURVE_COLUMNS)}; ap/ap50 = COCO mask AP (0-100) on the eval split after "
                f"'iteration' training steps (every {a.eval_every}, the last one is the run's final AP), "
                "loss = mean training loss over the steps since the previous evaluation, status = the "
                "run's final status. A run is trained with its full schedule (cosine over 'iterations', "
                "warm-up 10 %); a prefix of its curve is what a trial stopped at that iteration (and "
                "resumed later) has, not what a shorter schedule would reach"
            ),
        }
        side["untrained_ap"] = {str(k): v for k, v in (untrained or {}).items()}
        side["untrained_ap_note"] = (
            "per seed: AP of the prepared model before its first step (base + the domain's freshly "
            "initialised class head; LoRA and adapters start as the identity)"
        )
    return side


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="record real trial results for the search/select benches")
    ap.add_argument("--base", default=None, help="base checkpoint (models.pretrain output)")
    ap.add_argument("--out", required=True, help="the table (CSV); sidecar and curves go beside it")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (1: in this process)")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="search", help="which grid to record")
    ap.add_argument("--domain", default="clean", help="synthetic domain the trials adapt to")
    ap.add_argument(
        "--eval-every", type=int, default=0, help="also record AP every N iterations (curves file; 0: off)"
    )
    ap.add_argument(
        "--iterations", type=int, default=None, help="training length of every point (default: the grid's)"
    )
    ap.add_argument(
        "--write-only", action="store_true", help="write the tables from FILE.partial, train nothing"
    )
    ap.add_argument(
        "--latency-from",
        default=None,
        metavar="CSV",
        help="take latency_ms per deployed architecture from this earlier table (timed on an idle machine)",
    )
    ap.add_argument(
        "--seeds",
        default=",".join(str(s) for s in REAL_SEEDS),
        metavar="LIST",
        help="training seeds of every point, e.g. 3,4,5 for a held-out recording (default: %(default)s)",
    )
    ap.add_argument("--distances", action="store_true", help="record the domains' feature distances to --out")
    a = ap.parse_args(argv)
    try:
        seeds = sorted({int(x) for x in str(a.seeds).split(",") if x.strip()})
    except ValueError:
        ap.error(f"--seeds: a comma-separated list of integers, got {a.seeds!r}")
    if not seeds:
        ap.error("--seeds: at least one seed")
    if a.distances:
        doc = record_distances(a.base, a.out)
        print(json.dumps(doc["frechet"], indent=1))
        return 0
    out = Path(a.out)
    partial = out.with_name(out.name + ".partial")
    space, lrs, settings = GRIDS[a.grid]
    points = grid_points(space, lrs)
    if a.iterations:
        points = [{**p, "iterations": a.iterations} for p in points]

    lat_file = out.with_name(out.name + ".latency.json")
    if lat_file.exists():
        saved = json.loads(lat_file.read_text())
        latencies, spread = saved["latency_ms"], saved["spread_ms"]
    else:
        print(f"timing {len({architecture_key(p) for p in points})} deployed architectures", flush=True)
        latencies, spread = measure_architectures(points, a.base, domain=a.domain, settings=settings)
        _atomic_json(lat_file, {"latency_ms": latencies, "spread_ms": spread})
    measured = dict(latencies)
    borrowed: dict[str, float] = {}
    if a.latency_from:
        borrowed = borrow_latency(a.latency_from, set(latencies))
        latencies = {**latencies, **borrowed}
    for k, v in sorted(latencies.items()):
        print(f"  {k}: {v:.3f} ms", flush=True)
    print(f"  spread between {_BASE_COPIES} copies of the base network: {spread:.3f} ms", flush=True)

    untrained: dict[str, float] | None = None
    if a.eval_every:
        un_file = out.with_name(out.name + ".untrained.json")
        if un_file.exists():
            untrained = json.loads(un_file.read_text())
        else:
            untrained = {str(s): _untrained_ap(points[0], a.base, s, a.domain, settings) for s in seeds}
            _atomic_json(un_file, untrained)
        print(f"  untrained AP per seed: {untrained}", flush=True)

    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            done[_run_ident(r, int(r.get("seed", 0)))] = r
    jobs = [(p, s) for p in points for s in seeds]
    todo = [] if a.write_only else [(p, s) for p, s in jobs if _run_ident(p, s) not in done]
    print(f"{len(points)} grid points x {len(seeds)} seeds, {len(todo)} runs to do", flush=True)

    def finished(r: dict[str, Any]) -> None:
        with open(partial, "a") as fh:
            fh.write(json.dumps(r) + "\n")
        done[_run_ident(r, int(r.get("seed", 0)))] = r
        print(
            f"{len(done)}/{len(jobs)} {r['method']} seed {r['seed']} ap={r['ap']:.3f} "
            f"pct={r['trainable_pct']:.3f} ({r['wall_seconds']}s)",
            flush=True,
        )

    if a.jobs <= 1:
        import torch

        torch.set_num_threads(1)
        for p, s in todo:
            finished(_run_point(p, a.base, s, a.domain, a.eval_every, settings))
    else:
        with ProcessPoolExecutor(max_workers=a.jobs) as pool:
            futs = [pool.submit(_run_point, p, a.base, s, a.domain, a.eval_every, settings) for p, s in todo]
            for f in as_completed(futs):
                finished(f.result())
    complete = [p for p in points if all(_run_ident(p, s) in done for s in seeds)]
    if not complete:
        print("no grid point has all its seeds yet: nothing written")
        return 1
    ordered = sorted(complete, key=_ident)
    rows = [
        aggregate([done[_run_ident(p, s)] for s in seeds], latencies[architecture_key(p)]) for p in ordered
    ]
    if a.eval_every:
        _write_csv(curves_path(out), curve_rows([done[_run_ident(p, s)] for p in ordered for s in seeds]))
    _write_csv(out, rows)
    side = out.with_suffix(".json")
    # Wall time of the runs themselves (a recording may span several processes: --write-only, resume).
    run_seconds = sum(float(done[_run_ident(p, s)].get("wall_seconds", 0.0)) for p in complete for s in seeds)
    doc = _sidecar(a, len(rows), latencies, spread, run_seconds, untrained, seeds)
    if borrowed:
        doc["latency"] = (
            f"latency_ms of {len(borrowed)} of {len(latencies)} deployed architectures taken from "
            f"{Path(a.latency_from).name} (same architectures, timed there as its sidecar says); "
            "this recording's own timing (same protocol, on a busy machine) is measured_latency_ms"
        )
        doc["measured_latency_ms"] = {k: round(v, 3) for k, v in sorted(measured.items())}
    if len(complete) < len(points):
        doc["incomplete"] = f"{len(points) - len(complete)} of {len(points)} grid points not recorded yet"
    _atomic_json(side, doc)
    print(f"wrote {len(rows)} rows to {out} (+ {side.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
