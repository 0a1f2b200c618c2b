"""What a point of the space costs before training: decided in the driver, before a slot is taken.

A constraint on a metric known before training (trainable parameters, latency) is decided here,
when the sampler proposes a point, not in a trial: an infeasible point never takes a cluster slot
(:class:`search.engine.samplers.TruthfulOptunaSearch` tells it to Optuna at once and the store
marks it infeasible).

- Parameters come from ``models.peft`` accounting on a model built on the ``meta`` device (shapes
  only: no weights, no memory, no initialisation), with the method applied exactly as
  ``models.trial.prepare_trial`` applies it, including the class-dependent tensors a base
  checkpoint of another class count re-initialises (they train whatever the method). Counts
  depend on the method's structural fields only, never on ``lr`` or ``iterations``: one count per
  distinct method config, cached.
- Latency comes from the latency profile (:mod:`search.engine.latency_profile`), one figure per
  deployed architecture measured in isolation on the sweep's target device.

:class:`PointCosts` is the protocol the searcher needs (``costs(params) -> {metric: value}``); the
engine-in-the-loop bench implements it with a recorded table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.errors import UserError

__all__ = [
    "PointCosts",
    "ModelAccounting",
    "domain_num_classes",
    "violations",
]


class PointCosts(Protocol):
    """Pre-training metrics of a point (flat search parameters); metrics it cannot know are absent."""

    def costs(self, params: Mapping[str, Any]) -> dict[str, float]: ...


def violations(costs: Mapping[str, Any], constraints: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{metric: amount}`` of every violated constraint whose metric is in ``costs``
    (Optuna's convention: amount > 0 is a violation; NaN counts as violated)."""
    out: dict[str, float] = {}
    for c in constraints:
        v = costs.get(c["metric"])
        if v is None:
            continue
        v = float(v)
        amount = v - float(c["value"]) if c["op"] == "<=" else float(c["value"]) - v
        if math.isnan(amount) or amount > 0:
            out[str(c["metric"])] = amount if not math.isnan(amount) else math.inf
    return out


def domain_num_classes(domain: Mapping[str, Any]) -> int:
    """Class count of a sweep domain: a synthetic domain's classes or the train json's categories."""
    if domain.get("synthetic", True):
        from models.data.synthetic import domain_spec

        return len(domain_spec(str(domain["name"])).classes)
    path = str(domain["train_json"])
    if "://" in path:
        from search.cluster.storage import localize_paths

        path = str(localize_paths({"train_json": path})["train_json"])
    try:
        with open(path) as fh:
            cats = json.load(fh).get("categories") or []
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read categories ({exc})") from None
    if not cats:
        raise UserError(f"{path}: no categories")
    return len(cats)


@dataclass
class ModelAccounting:
    """Trainable / total parameters of points of the space (see module docstring); picklable.

    ``base_classes``: the class count of the base checkpoint (None: no checkpoint, or the same
    count), which decides whether the class head is re-initialised (and so trainable)."""

    model: str
    num_classes: int
    base_classes: int | None = None
    _counts: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def for_sweep(cls, model: Mapping[str, Any], domain: Mapping[str, Any]) -> ModelAccounting:
        base = None
        ckpt = model.get("base_checkpoint")
        if ckpt:
            from models.checkpoint import read_state_dict
            from search.cluster.storage import localize_paths

            sd = read_state_dict(str(localize_paths({"base_checkpoint": ckpt})["base_checkpoint"]))
            base = next((int(v.shape[0]) for k, v in sd.items() if k.endswith("class_embed.weight")), None)
        return cls(str(model["name"]), domain_num_classes(domain), base)

    def costs(self, params: Mapping[str, Any]) -> dict[str, float]:
        from search.engine.space import method_kwargs

        method, kwargs = method_kwargs(dict(params))
        key = json.dumps([method, kwargs], sort_keys=True, default=str)
        if key not in self._counts:
            self._counts[key] = self._count(method, kwargs)
        return dict(self._counts[key])

    def _count(self, method: str, kwargs: dict[str, Any]) -> dict[str, float]:
        import torch

        import models
        from models.checkpoint import CLASS_DEPENDENT_SUFFIXES
        from models.peft import apply_method, build_method_config

        config = build_method_config(method, **kwargs)
        with torch.device("meta"):
            model = models.build_model(self.model, self.num_classes)
        reinit: list[str] = []
        if self.base_classes is not None and self.base_classes != self.num_classes:
            reinit = [k for k in model.state_dict() if k.endswith(CLASS_DEPENDENT_SUFFIXES)]
        info = apply_method(model, config, reinitialized=reinit)
        return {
            "trainable_params": float(info.trainable),
            "total_params": float(info.total),
            "trainable_pct": float(info.trainable_pct),
        }
