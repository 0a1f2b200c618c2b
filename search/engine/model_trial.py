"""The default trial factory: adapts :mod:`models.trial` to the trainable's factory protocol.

``prepare(params, context)`` builds a ``models.trial.TrialSpec`` from the sampled parameters
(method + its parameters, ``lr``, ``iterations``), the sweep's model/domain settings and
``trial.extra`` (any further TrialSpec field, e.g. ``image_size``, ``num_train_images``,
``batch_size``, ``latency_runs``), calls ``models.trial.prepare_trial`` (model built, base
loaded, PEFT applied, params + deployed latency measured, through the sweep's latency cache when
the context says so) and returns an object with ``costs`` (known before training),
``train_and_evaluate(report)`` and the resume protocol of :mod:`search.engine.trainable`
(``save_state`` / ``load_state`` / ``start_iteration``), so a retried or resumed real trial
continues from its last checkpoint instead of training from iteration 0 again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.engine.space import method_kwargs

__all__ = ["prepare", "spec_dict", "ModelTrial"]


def spec_dict(params: dict[str, Any], context: Any) -> dict[str, Any]:
    """The ``TrialSpec.from_dict`` mapping of one trial (pure; tested without torch)."""
    method, kwargs = method_kwargs(params)
    dom = dict(context.domain)
    spec: dict[str, Any] = {
        "model": context.model["name"],
        "base_checkpoint": context.model.get("base_checkpoint"),
        "method": method,
        "method_params": kwargs,
        "lr": float(params["lr"]),
        "iterations": int(params["iterations"]),
        "eval_every": int(context.trial.get("eval_every", 0)),
        "seed": int(context.trial.get("seed", 0)),
    }
    if dom.get("synthetic", True):
        spec["domain"] = dom["name"]
    else:
        for k in ("train_json", "train_images", "eval_json", "eval_images"):
            if dom.get(k):
                spec[k] = dom[k]
    spec.update(dict(context.trial.get("extra") or {}))
    return spec


class ModelTrial:
    """A prepared ``models.trial`` trial behind the factory protocol.

    Resume: ``save_state(dir)`` writes what the trial needs to continue exactly (trainable
    parameters only, optimizer, LR schedule, iteration, RNG states, data order; see
    :meth:`models.trial.PreparedTrial.save_state`); ``load_state(dir)`` restores it and returns the
    iteration to continue from (0 when ``dir`` holds no training state, e.g. a checkpoint written
    before the first report), which ``train_and_evaluate`` then starts from (``start_iteration``).
    ``base_load`` is the base checkpoint's load summary for the trial's row.
    """

    def __init__(self, prepared: Any) -> None:
        self.prepared = prepared
        self.costs = prepared.feasibility()
        self.start_iteration = 0
        report = getattr(prepared, "load_report", None)
        self.base_load = report.short() if report is not None else ""

    def save_state(self, directory: str | os.PathLike[str]) -> None:
        self.prepared.save_state(directory)

    def load_state(self, directory: str | os.PathLike[str]) -> int:
        from models.trial import STATE_FILE

        if not (Path(directory) / STATE_FILE).is_file():
            return 0
        self.start_iteration = int(self.prepared.load_state(directory))
        return self.start_iteration

    def train_and_evaluate(
        self, report: Callable[[int, dict[str, Any]], None], start_iteration: int | None = None
    ) -> Any:
        start = self.start_iteration if start_iteration is None else int(start_iteration)

        def cb(iteration: int, metrics: dict[str, Any]) -> None:
            report(iteration, metrics)  # returning None: never ask models.trial to stop itself

        return self.prepared.train_and_evaluate(report=cb, start_iteration=start)


def prepare(params: dict[str, Any], context: Any) -> ModelTrial:
    import torch

    from models.trial import prepare_trial
    from search.cluster.storage import localize_paths

    # Ray sets OMP_NUM_THREADS to the trial's CPU share; torch should not oversubscribe beyond it.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    cache = None
    if getattr(context, "latency_cache", False):
        from search.engine.latency_cache import SweepLatencyCache

        cache = SweepLatencyCache(context.sweep_id)
    # Data and base checkpoints may live on shared storage (s3://, gs://): copy them once per node.
    return ModelTrial(prepare_trial(localize_paths(spec_dict(params, context)), latency_cache=cache))
