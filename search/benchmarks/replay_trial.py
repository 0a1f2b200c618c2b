"""The Tune trainable of the engine-in-the-loop bench (:mod:`search.benchmarks.engine_replay`).

Kept free of project imports: every Ray worker that runs a replayed trial imports this module, and
importing the config (pydantic, the PEFT registry, torch) would cost each worker seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ReplayContext", "config_key", "replay_trial"]


def config_key(config: Mapping[str, Any], columns: Sequence[str], numeric: Sequence[str]) -> str:
    """The identity of a configuration in a recorded table (missing / NaN / "" -> empty field)."""
    out = []
    for c in columns:
        v = config.get(c)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            out.append("")
        elif c in numeric:
            out.append(f"{float(v):.6g}")
        else:
            out.append(str(v))
    return "|".join(out)


@dataclass(frozen=True)
class ReplayContext:
    """What the replayed trials share (``tune.with_parameters``): per configuration key the final
    objective values (``names`` order, NaN = failed) and the AP curve ``[(iteration, ap), ...]``."""

    names: tuple[str, ...]
    columns: tuple[str, ...]
    numeric: tuple[str, ...]
    values: dict[str, list[float]]
    curves: dict[str, list[tuple[int, float]]]
    seconds_per_iteration: float


def replay_trial(config: dict[str, Any], context: ReplayContext) -> None:
    """The recorded curve (one report per recorded evaluation before the end, sleeping the
    iterations in between), then the recorded final values."""
    from ray import tune

    key = config_key(config, context.columns, context.numeric)
    vals = context.values[key]
    costs = {n: v for n, v in zip(context.names, vals) if n != "ap"}
    total = int(config["iterations"])
    done = 0
    for it, ap in context.curves.get(key, []):
        if it >= total:
            break
        time.sleep(context.seconds_per_iteration * (it - done))
        done = it
        tune.report({"iteration": it, "ap": ap, **costs, "status": "running", "final": False})
    time.sleep(context.seconds_per_iteration * (total - done))
    final: dict[str, Any] = {"iteration": total, "iterations_done": total, "final": True, **costs}
    if all(math.isfinite(v) for v in vals):
        final.update({"ap": vals[context.names.index("ap")], "status": "completed"})
    else:
        final["status"] = "failed"
    tune.report(final)
