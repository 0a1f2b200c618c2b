"""A short CPU trial of maskdino_tiny end to end; NaN injection; spec validation."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest

from models.errors import UserError
from models.trial import PreparedTrial, TrialRecord, TrialSpec, prepare_trial, run_trial

CONTRACT_KEYS = {
    "status", "error", "ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l", "missed_rate", "tp_confidence",
    "small_recall", "trainable_params", "total_params", "trainable_pct", "latency_ms", "latency_p90_ms",
    "device", "train_seconds", "iterations", "final_loss", "start_iteration", "base_load",
}  # fmt: skip

SHORT: dict[str, Any] = {
    "model": "maskdino_tiny",
    "domain": "clean",
    "method": "lora",
    "iterations": 6,
    "eval_every": 3,
    "batch_size": 2,
    "num_train_images": 6,
    "num_eval_images": 3,
    "latency_warmup": 1,
    "latency_runs": 3,
}


@pytest.fixture(scope="module")
def prepared_once() -> PreparedTrial:
    return prepare_trial(SHORT)


def _fresh(prepared: PreparedTrial, **spec_changes: Any) -> PreparedTrial:
    """A copy of the prepared trial (own model) with some spec fields changed; saves re-preparing."""
    return dataclasses.replace(
        prepared, model=copy.deepcopy(prepared.model), spec=dataclasses.replace(prepared.spec, **spec_changes)
    )


def test_short_cpu_trial_returns_a_complete_record(prepared_once: PreparedTrial) -> None:
    prepared = _fresh(prepared_once)
    # Params + deployed latency are known BEFORE training.
    feas = prepared.feasibility()
    assert 0 < feas["trainable_params"] < feas["total_params"]
    assert feas["latency_ms"] > 0 and feas["latency_p90_ms"] >= feas["latency_ms"]
    frozen_before = {
        n: p.detach().clone() for n, p in prepared.model.named_parameters() if not p.requires_grad
    }
    trainable_before = {
        n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad
    }

    reports: list[tuple[int, dict[str, float]]] = []
    record = prepared.train_and_evaluate(report=lambda it, m: reports.append((it, m)))
    d = record.to_dict()
    assert set(d) == CONTRACT_KEYS
    assert all(isinstance(v, int | float | str) for v in d.values())  # flat scalars
    assert d["status"] == "completed" and d["error"] == ""
    assert d["iterations"] == 6 and math.isfinite(d["final_loss"]) and d["train_seconds"] > 0
    for k in ("ap", "ap50", "ap75"):
        assert 0.0 <= d[k] <= 100.0
    assert 0.0 <= d["missed_rate"] <= 1.0
    assert d["trainable_params"] == feas["trainable_params"] and d["total_params"] == feas["total_params"]
    assert d["trainable_pct"] == pytest.approx(100.0 * d["trainable_params"] / d["total_params"])
    assert d["device"].startswith("cpu")
    assert [it for it, _ in reports] == [3, 6]
    assert all({"iteration", "ap", "loss"} <= set(m) for _, m in reports)
    assert reports[-1][1]["ap"] == pytest.approx(d["ap"])  # last report is the final model
    # PEFT: frozen weights did not move; training did change the trainable ones.
    for n, p in prepared.model.named_parameters():
        if n in frozen_before:
            assert p.detach().equal(frozen_before[n]), n
    assert any(
        not p.detach().equal(trainable_before[n])
        for n, p in prepared.model.named_parameters()
        if n in trainable_before
    )


def test_report_can_stop_a_trial_early(prepared_once: PreparedTrial) -> None:
    prepared = _fresh(prepared_once, iterations=20, eval_every=2)
    record = prepared.train_and_evaluate(report=lambda it, m: it >= 2)
    assert record.status == "completed" and record.iterations == 2


def test_nan_injection_ends_as_failed_not_ap_zero() -> None:
    # Through run_trial: the whole path from a plain dict spec.
    record = run_trial(dict(SHORT, inject_nan_at=2, eval_every=0))
    d = record.to_dict()
    assert d["status"] == "failed"
    assert "non-finite loss" in d["error"] and "iteration 2" in d["error"]
    assert math.isnan(d["ap"]) and math.isnan(d["missed_rate"])  # not AP 0
    assert d["iterations"] == 1
    assert d["trainable_params"] > 0 and d["latency_ms"] > 0  # measured before training


def test_huge_lr_diverges_and_fails(prepared_once: PreparedTrial) -> None:
    prepared = _fresh(prepared_once, lr=1e30, iterations=4, eval_every=0, grad_clip=0.0)
    record = prepared.train_and_evaluate()
    assert record.status == "failed" and "non-finite" in record.error


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"iterations": -1}, "iterations"),
        ({"domain": "mars"}, "domain"),
        ({"lr": 0}, "lr"),
        ({"schedule": "linear"}, "schedule"),
        ({"batch_size": "two"}, "batch_size"),
        ({"bogus": 1}, "bogus"),
        ({"train_json": "a.json"}, "train_images"),
        ({"device": "tpu"}, "device"),
        ({"inject_nan_at": 0}, "inject_nan_at"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_spec_is_a_user_error_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(UserError, match=field):
        TrialSpec.from_dict(values)


def test_bad_method_param_is_a_user_error() -> None:
    with pytest.raises(UserError, match="rank"):
        prepare_trial(dict(SHORT, method_params={"rank": 0}))


def test_failed_record_defaults() -> None:
    d = TrialRecord(status="failed", error="x").to_dict()
    assert math.isnan(d["ap"]) and d["iterations"] == 0


def test_trial_on_coco_files_uses_the_same_path(tmp_path) -> None:
    from models.data import write_synthetic_coco

    path = write_synthetic_coco("xray", tmp_path, 6, seed=1)
    spec = dict(SHORT, train_json=str(path), train_images=str(tmp_path / "images"), num_eval_images=2)
    spec.update(iterations=1, eval_every=0)
    prepared = prepare_trial(spec)
    assert prepared.class_names == ["disk", "box", "triangle"]
    assert len(prepared.train_dicts) == 4 and len(prepared.eval_dicts) == 2  # last images held out
    assert {d["image_id"] for d in prepared.train_dicts}.isdisjoint(
        d["image_id"] for d in prepared.eval_dicts
    )
    record = prepared.train_and_evaluate()
    assert record.status == "completed" and record.iterations == 1


def test_latency_is_measured_on_the_deployed_model(prepared_once: PreparedTrial) -> None:
    from models.latency import deployed_copy
    from models.peft import count_parameters

    model = prepared_once.model
    lora_keys = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_keys  # the trial's model keeps its LoRA factors for training
    deployed = deployed_copy(model)
    assert not any("lora_" in n for n, _ in deployed.named_parameters())  # merged away
    assert count_parameters(deployed).total < count_parameters(model).total
    assert [n for n, _ in model.named_parameters() if "lora_" in n] == lora_keys  # original untouched


def test_latency_cache_measures_each_deployed_architecture_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.latency as latency_mod

    class DictCache:
        def __init__(self) -> None:
            self.entries: dict[str, dict[str, Any]] = {}

        def get(self, key: str) -> dict[str, Any] | None:
            return self.entries.get(key)

        def put(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
            return self.entries.setdefault(key, value)

    calls: list[int] = []
    real = latency_mod.measure_latency

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(latency_mod, "measure_latency", counting)
    cache = DictCache()
    small = dict(SHORT, num_train_images=2, num_eval_images=2, image_size=64)
    lora2 = prepare_trial(dict(small, method_params={"rank": 2}), latency_cache=cache)
    lora16 = prepare_trial(
        dict(small, method_params={"rank": 16, "alpha": 4.0}, lr=3e-3), latency_cache=cache
    )
    head = prepare_trial(dict(small, method="class_mask"), latency_cache=cache)
    assert len(calls) == 1  # merged LoRA (any rank) and a head baseline deploy the base network
    assert lora2.latency == lora16.latency == head.latency
    x1 = prepare_trial(dict(small, method="adapter", method_params={"repetitions": 1}), latency_cache=cache)
    x2 = prepare_trial(dict(small, method="adapter", method_params={"repetitions": 2}), latency_cache=cache)
    assert len(calls) == 3 and len(cache.entries) == 3
    assert all(k.startswith("maskdino_tiny|classes=1|64px|cpu") for k in cache.entries)
    assert (
        x1.feasibility()["latency_ms"]
        == cache.entries[next(k for k in cache.entries if '"repetitions": 1' in k)]["median_ms"]
    )
    assert x2.latency.runs == 3
    # another input size is another key
    prepare_trial(dict(small, method_params={"rank": 2}, image_size=96), latency_cache=cache)
    assert len(calls) == 4


def test_bench_latency_prints_ratios(tmp_path, capsys) -> None:
    import argparse
    import json

    from search.benchmarks.latency import add_arguments as add_bench_arguments
    from search.benchmarks.latency import main as bench_main

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    out = tmp_path / "lat.json"
    args = parser.parse_args(["--warmup", "1", "--runs", "2", "--max-repetitions", "2", "--json", str(out)])
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["base", "lora r8 merged", "adapter x1", "adapter x2"]
    assert rows[0]["ratio_to_base"] == 1.0 and all(r["median_ms"] > 0 for r in rows)
    assert "vs base" in capsys.readouterr().out


@pytest.mark.gpu
def test_short_trial_on_cuda_uses_bf16_autocast_and_cuda_events() -> None:
    record = run_trial(dict(SHORT, device="cuda"))
    assert record.status == "completed", record.error
    assert not record.device.startswith("cpu") and record.latency_ms > 0


def test_trial_default_score_threshold_is_the_evaluation_default() -> None:
    from models.evaluation import DEFAULT_SCORE_THRESHOLD

    assert TrialSpec().score_threshold == DEFAULT_SCORE_THRESHOLD
