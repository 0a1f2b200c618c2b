"""A small real sweep with the latency profile, printing per deployed architecture the figures the
trials got (one per architecture: the profile's) and the fronts' re-measurement after the sweep.

Usage: ``python -m search.benchmarks.latency_profile_check OUT`` (maskdino_tiny on the clean domain,
the shipped base, LoRA r2/r8 and adapters x1-x4, 8 trials of 4 iterations, 2 at once, 128 px,
20 timed passes; the user cache goes to ``OUT/user-cache`` so every architecture is measured).
Recorded figures: ``latency_profile_cpu.txt``.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

BASE = Path(__file__).resolve().parents[2] / "models" / "pretrained" / "maskdino_tiny_source" / "base.pt"


def _config(out: Path) -> Any:
    from search.config import parse_config

    return parse_config(
        {
            "name": "latcheck",
            "model": {"name": "maskdino_tiny", "base_checkpoint": str(BASE)},
            "domains": ["clean"],
            "space": {
                "methods": ["lora", "adapter"],
                "lora": {"rank": [2, 8], "targets": [["msda"]]},
                "adapter": {"repetitions": [1, 2, 3, 4], "reduction": [8]},
                "lr": {"low": 1e-3, "high": 1e-3},
                "iterations": [4],
            },
            "budget": {"trials": 8, "concurrency": 2, "max_failures": 0},
            "sampler": {"name": "random", "seed": 0},
            "early_stopping": {"enabled": False},
            "trial": {
                "eval_every": 4,
                "extra": {
                    "num_train_images": 4,
                    "num_eval_images": 2,
                    "batch_size": 1,
                    "image_size": 128,
                    "latency_runs": 20,
                    "latency_warmup": 3,
                    "eval_batch_size": 2,
                },
            },
            "output_dir": str(out / "sweep"),
        }
    )


def main(argv: list[str] | None = None) -> int:
    from search.engine.runner import run_sweep

    out = Path((argv if argv is not None else sys.argv[1:])[0])
    os.environ["PEFTSWEEP_CACHE_DIR"] = str(out / "user-cache")
    t0 = time.time()
    res = run_sweep(_config(out), quiet=True, report=False)
    per: dict[str, set[float]] = collections.defaultdict(set)
    for r in res.trials.to_dict("records"):
        arch = "base (LoRA merged)" if r["method"] == "lora" else f"adapter x{int(r['adapter_repetitions'])}"
        per[arch].add(round(float(r["latency_ms"]), 4))
    profile = json.loads((res.output_dir / "state" / "latency_profile.json").read_text())
    check = json.loads((res.output_dir / "latency_check.json").read_text())
    print(f"{len(res.trials)} trials; latency figures per architecture across the sweep's trials:")
    for arch, figures in sorted(per.items()):
        print(f"  {arch:<20s} {sorted(figures)}")
    print("profile (measured once each, in isolation, interleaved):")
    for key, v in profile.items():
        print(
            f"  {key.split('|', 4)[-1][-70:]:<70s} median {v['median_ms']:.2f} ms  p90 {v['p90_ms']:.2f} ms"
        )
    print("front members re-measured after the sweep (profile -> again, relative difference):")
    for m in check["members"]:
        print(
            f"  {m['architecture'][-50:]:<50s} {m['latency_ms']:.2f} -> {m['remeasured_ms']:.2f} ms  "
            f"{m['relative_difference']:+.1%}"
        )
    print(f"max |difference| {check['max_abs_relative_difference']:.1%}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
