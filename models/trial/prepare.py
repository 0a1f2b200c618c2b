"""Build a trial: model, base checkpoint, PEFT method, then parameters and deployed latency."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from models.trial.data import load_trial_data, resolve_device
from models.trial.prepared import PreparedTrial
from models.trial.spec import ReportFn, TrialRecord, TrialSpec

if TYPE_CHECKING:
    from models.latency import LatencyCache

__all__ = ["prepare_trial", "run_trial"]


def prepare_trial(
    spec: TrialSpec | Mapping[str, Any], latency_cache: LatencyCache | None = None
) -> PreparedTrial:
    """Build model, load base, apply PEFT, measure params + deployed latency (no training yet).

    With ``latency_cache`` the latency is measured once per deployed architecture
    (:func:`models.latency.deployed_architecture`), model, class count, input size and device, and
    reused: merged LoRA of any rank then shares the base network's figure instead of each trial
    drawing its own timing noise."""
    import torch

    import models
    from models.latency import (
        LatencyResult,
        deployed_architecture,
        deployed_copy,
        device_name,
        measure_latency,
    )
    from models.peft import apply_method, build_method_config, count_parameters

    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.from_dict(spec)
    else:
        spec.validate()
    t0 = time.perf_counter()
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    train_dicts, eval_dicts, class_names = load_trial_data(spec)
    method_config = build_method_config(spec.method, **dict(spec.method_params))
    torch.manual_seed(spec.seed)
    model = models.build_model(spec.model, len(class_names))
    load_report = None
    if spec.base_checkpoint:
        from models.checkpoint import load_checkpoint

        load_report = load_checkpoint(model, spec.base_checkpoint, num_classes=len(class_names))
    # Tensors the checkpoint could not provide for this class count (the class head) are fresh:
    # they must train whatever the method, or the trial would evaluate a random classifier.
    reinitialised = tuple(getattr(load_report, "reinitialised", ()) or ())
    peft_info = apply_method(model, method_config, reinitialized=reinitialised)
    model.to(device)
    params = count_parameters(model)

    def measure() -> LatencyResult:
        return measure_latency(
            deployed_copy(model), spec.image_size, device, warmup=spec.latency_warmup, runs=spec.latency_runs
        )

    if latency_cache is None:
        latency = measure()
    else:
        key = (
            f"{spec.model}|classes={len(class_names)}|{spec.image_size}px|{device_name(device)}|"
            f"{deployed_architecture(method_config)}"
        )
        hit = latency_cache.get(key)
        latency = LatencyResult.from_dict(
            hit if hit is not None else latency_cache.put(key, measure().to_dict())
        )
    return PreparedTrial(
        spec=spec,
        model=model,
        device=device,
        class_names=class_names,
        train_dicts=train_dicts,
        eval_dicts=eval_dicts,
        params=params,
        latency=latency,
        load_report=load_report,
        peft_info=peft_info,
        prepare_seconds=time.perf_counter() - t0,
    )


def run_trial(spec: TrialSpec | Mapping[str, Any], report: ReportFn | None = None) -> TrialRecord:
    """:func:`prepare_trial` then :meth:`PreparedTrial.train_and_evaluate`."""
    return prepare_trial(spec).train_and_evaluate(report=report)
