"""The Ray Tune function trainable that runs one trial.

Flow (contract with the scheduler, the Optuna glue and the store callback):

1. Resolve the *trial factory* named in the config (``"pkg.module:function"``) and call
   ``factory(params, context) -> PreparedLike``. It builds the model and measures the costs known
   before training (``PreparedLike.costs``: trainable_params, total_params, trainable_pct,
   latency_ms, ...). The default factory, :func:`search.engine.model_trial.prepare`, wraps
   ``models.trial.prepare_trial``; tests name cheap synthetic factories.
2. If a constraint on a pre-training metric is violated the trial reports once with
   ``status="infeasible", final=True`` and returns: no training is spent on it.
3. Otherwise ``prepared.train_and_evaluate(report=cb)`` trains; every ``cb(iteration, metrics)``
   becomes ``tune.report({... "iteration", "ap", "loss", costs ..., "final": False}, checkpoint)``.
   The checkpoint holds ``state.json`` (history so far) and, when the prepared object offers
   ``save_state(dir)``, its training state; a retried trial whose prepared object offers
   ``load_state(dir) -> int`` resumes from there, otherwise it restarts training.
4. A trial whose row in the store (``context.store_root``) is already final is not trained again:
   the row is re-reported as its final result, marked ``replayed`` (the store callback then leaves
   the row as it is).
5. The final report has the whole record (``TrialRecord.to_dict()`` keys), the costs,
   ``status`` ("completed" | "failed"), ``start_iteration`` (> 0: continued from a checkpoint),
   ``base_load`` (the base checkpoint's load summary, when the prepared object has one) and
   ``final=True``. A trial whose checkpoint already
   holds its final record (the driver died before seeing it) just reports that record again.

A trial the scheduler stops never sends ``final=True``: that is how the searcher and the store
know it was pruned.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from search.config import PARAM_COLUMNS

__all__ = [
    "TrialContext",
    "PreparedLike",
    "resolve_factory",
    "run_tune_trial",
    "pretrain_violations",
    "finished_row",
    "FINISHED_STATES",
]

# Row states a trial never leaves: a resumed sweep neither trains such a trial again nor rewrites it.
FINISHED_STATES = frozenset({"completed", "infeasible", "failed"})


@dataclass
class TrialContext:
    """What every trial of one domain shares (passed with ``tune.with_parameters``)."""

    sweep_id: str
    domain: dict[str, Any]
    model: dict[str, Any]
    trial: dict[str, Any]  # TrialSettings as JSON (function, eval_every, seed, extra)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    sampler: str = ""
    work_dir: str = ""  # per-sweep scratch folder (artifacts)
    store_root: str = ""  # the sweep's results folder, when the trial's node can see it
    latency_cache: bool = False  # ask the sweep's latency cache actor (search.engine.latency_cache)


class PreparedLike(Protocol):
    costs: Mapping[str, float]

    def train_and_evaluate(self, report: Callable[[int, dict[str, Any]], None]) -> Any: ...


def resolve_factory(path: str) -> Callable[..., Any]:
    """``"pkg.module:attr"`` -> the attribute (ImportError/AttributeError name the path)."""
    mod_name, _, attr = path.partition(":")
    module = importlib.import_module(mod_name)
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError:
        raise AttributeError(f"trial function {path!r}: module {mod_name} has no {attr!r}") from None


def pretrain_violations(costs: Mapping[str, Any], constraints: list[dict[str, Any]]) -> list[str]:
    """Constraints on metrics present in ``costs`` that are violated, as 'metric op value' strings."""
    out = []
    for c in constraints:
        v = costs.get(c["metric"])
        if v is None:
            continue
        v = float(v)
        ok = v <= c["value"] if c["op"] == "<=" else v >= c["value"]
        if not ok or math.isnan(v):
            out.append(f"{c['metric']}={v:.4g} violates {c['metric']} {c['op']} {c['value']}")
    return out


def _record_dict(record: Any) -> dict[str, Any]:
    if hasattr(record, "to_dict"):
        return dict(record.to_dict())
    if isinstance(record, Mapping):
        return dict(record)
    raise TypeError(f"trial returned {type(record).__name__}; expected a TrialRecord or a dict")


def _scalar(v: Any) -> Any:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _report(metrics: dict[str, Any], state: dict[str, Any], prepared: Any | None) -> None:
    """tune.report with a checkpoint (state.json + the trial's own state when it has save_state)."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="peftsweep-ckpt-") as d:
        Path(d, "state.json").write_text(json.dumps(state))
        if prepared is not None and hasattr(prepared, "save_state"):
            prepared.save_state(d)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def run_tune_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The function trainable (see module docstring)."""
    from ray import tune

    t0 = time.time()
    params = {k: config[k] for k in PARAM_COLUMNS if k in config}
    base = {
        "node": os.environ.get("RAY_NODE_ID", "") or _node_id(),
        "hostname": socket.gethostname(),
        "seed": int(context.trial.get("seed", 0)),
        "started_at": t0,
    }
    state: dict[str, Any] = {"history": [], "final": None, "started_at": t0}
    ckpt = tune.get_checkpoint()
    resume_dir: str | None = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads(Path(d, "state.json").read_text())
            if state.get("final") is not None:
                _report(state["final"], state, None)
                return
            # Copy the training state out: the checkpoint dir is only valid inside the block.
            resume_dir = tempfile.mkdtemp(prefix="peftsweep-resume-")
            for p in Path(d).iterdir():
                if p.is_file():
                    Path(resume_dir, p.name).write_bytes(p.read_bytes())
        base["started_at"] = state.get("started_at", t0)

    # A trial the store already holds as finished (the driver died after writing its row but before
    # Tune's experiment snapshot) is not trained again: its recorded final result is re-reported.
    prev = finished_row(context.store_root, tune.get_context().get_trial_id())
    if prev is not None:
        state["final"] = prev
        _report(prev, state, None)
        return

    factory = resolve_factory(str(context.trial["function"]))
    prepared = factory(params, context)
    costs = {k: _scalar(v) for k, v in dict(prepared.costs).items()}
    prepare_s = time.time() - t0
    base["prepare_seconds"] = prepare_s
    if getattr(prepared, "base_load", ""):
        base["base_load"] = str(prepared.base_load)

    bad = pretrain_violations(costs, context.constraints)
    if bad:
        final = {
            **base,
            **costs,
            "status": "infeasible",
            "final": True,
            "stop_reason": "; ".join(bad),
            "iteration": 0,
            "finished_at": time.time(),
            "wall_seconds": time.time() - t0,
        }
        state["final"] = final
        _report(final, state, None)
        return

    start_iter = 0
    if resume_dir is not None and hasattr(prepared, "load_state"):
        start_iter = int(prepared.load_state(resume_dir) or 0)

    def report(iteration: int, metrics: dict[str, Any]) -> None:
        m = {k: _scalar(v) for k, v in metrics.items()}
        m.update(costs)
        m.update(base)
        m.update({"iteration": int(iteration), "status": "running", "final": False})
        state["history"].append({"iteration": int(iteration), "ap": m.get("ap"), "loss": m.get("loss")})
        _report(m, state, prepared)

    t_train = time.time()
    kwargs: dict[str, Any] = {"report": report}
    if start_iter:
        kwargs["start_iteration"] = start_iter
    record = _record_dict(prepared.train_and_evaluate(**kwargs))
    final = {k: _scalar(v) for k, v in record.items()}
    final.update(costs)
    final.update(base)
    final.setdefault("train_seconds", time.time() - t_train)
    final.setdefault("start_iteration", start_iter)
    status = str(final.get("status") or "completed")
    final.update(
        {
            "status": "completed" if status == "completed" else "failed",
            "final": True,
            "iteration": int(final.get("iterations") or config.get("iterations") or 0),
            "iterations_done": int(final.get("iterations") or config.get("iterations") or 0),
            "finished_at": time.time(),
            "wall_seconds": time.time() - t0,
        }
    )
    state["final"] = final
    _report(final, state, None)


def finished_row(store_root: str, trial_id: str | None) -> dict[str, Any] | None:
    """The store's row of ``trial_id`` as a final result (marked ``replayed``), if it is there and
    finished; None otherwise."""
    if not store_root or not trial_id:
        return None
    from search.results.store import ResultStore

    store = ResultStore(store_root)
    if not store.exists():
        return None
    table = store.trials_table()
    import pyarrow.compute as pc

    rows = table.filter(pc.equal(table["trial_id"], trial_id)).to_pylist()
    if not rows or rows[0].get("status") not in FINISHED_STATES:
        return None
    row = {k: v for k, v in rows[0].items() if v is not None}
    row["final"] = True
    row["replayed"] = True
    row["iteration"] = int(row.get("iterations_done") or 0)
    return row


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())[:12]
    except Exception:  # noqa: BLE001 - the node id is informational only
        return ""
