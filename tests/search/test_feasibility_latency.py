"""Costs known before a slot: parameter accounting without a real model, the latency profile's caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import UserError
from search.engine.feasibility import (
    ModelAccounting,
    domain_num_classes,
    violations,
)
from search.engine.latency_profile import LatencyProfile, profile_key, with_device

POINTS = [
    {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_targets": "", "lr": 1e-3, "iterations": 10},
    {
        "method": "lora",
        "lora_rank": 16,
        "lora_alpha": 8.0,
        "lora_targets": "msda",
        "lr": 1e-4,
        "iterations": 10,
    },
    {
        "method": "adapter",
        "adapter_repetitions": 2,
        "adapter_placement": "enc_self,dec_cross",
        "adapter_residual": "kappa",
        "adapter_reduction": 4,
        "lr": 1e-3,
        "iterations": 10,
    },
    {"method": "class_mask", "lr": 1e-3, "iterations": 10},
]


@pytest.mark.parametrize("base_classes", [None, 7])
def test_accounting_matches_the_built_model(base_classes: int | None) -> None:
    """Meta-device accounting == counting the real model the trial builds (class head re-initialised
    and trained when the base checkpoint has another class count)."""
    import torch

    import models
    from models.checkpoint import CLASS_DEPENDENT_SUFFIXES
    from models.peft import apply_method, build_method_config, count_parameters
    from search.engine.space import method_kwargs

    acc = ModelAccounting("maskdino_tiny", 3, base_classes)
    for p in POINTS:
        method, kw = method_kwargs(p)
        torch.manual_seed(0)
        model = models.build_model("maskdino_tiny", 3)
        reinit = (
            [k for k in model.state_dict() if k.endswith(CLASS_DEPENDENT_SUFFIXES)] if base_classes else []
        )
        apply_method(model, build_method_config(method, **kw), reinitialized=reinit)
        real = count_parameters(model)
        got = acc.costs({**p, "lr": 0.5, "iterations": 99})  # lr / iterations never matter
        assert got == {
            "trainable_params": real.trainable,
            "total_params": real.total,
            "trainable_pct": pytest.approx(real.trainable_pct),
        }, p
    assert len(acc._counts) == len(POINTS)  # one count per method config, cached


def test_violations() -> None:
    cons = [
        {"metric": "trainable_pct", "op": "<=", "value": 2.0},
        {"metric": "latency_ms", "op": "<=", "value": 50},
    ]
    assert violations({"trainable_pct": 3.0}, cons) == {"trainable_pct": 1.0}
    assert violations({"trainable_pct": 1.0, "latency_ms": 49.0}, cons) == {}
    assert violations({"latency_ms": float("nan")}, cons) == {"latency_ms": float("inf")}
    assert violations({"ap": 0.1}, [{"metric": "ap", "op": ">=", "value": 0.2}]) == {"ap": pytest.approx(0.1)}


def test_domain_classes(tmp_path: Path) -> None:
    assert domain_num_classes({"name": "clean", "synthetic": True}) >= 1
    coco = tmp_path / "train.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 2}]}))
    assert domain_num_classes({"name": "mine", "synthetic": False, "train_json": str(coco)}) == 2
    coco.write_text("{")
    with pytest.raises(UserError, match="train.json"):
        domain_num_classes({"name": "mine", "synthetic": False, "train_json": str(coco)})


def test_profile_caches_in_the_sweep_folder_and_the_user_cache(tmp_path: Path) -> None:
    user = tmp_path / "home" / "latency_profile.json"
    k_base = profile_key("maskdino_tiny", 3, 128, "cpu (x86_64, 1 threads)", "base")
    k_ad = profile_key("maskdino_tiny", 3, 128, "cpu (x86_64, 1 threads)", '{"method": "adapter"}')
    first = LatencyProfile(tmp_path / "a" / "state" / "latency_profile.json", user)
    assert first.get(k_base) is None
    first.put(k_base, {"median_ms": 10.0, "p90_ms": 11.0})
    assert first.put(k_base, {"median_ms": 99.0, "p90_ms": 99.0})["median_ms"] == 10.0  # first wins
    # A later sweep reuses the user cache and records what it used in its own folder.
    second = LatencyProfile(tmp_path / "b" / "state" / "latency_profile.json", user)
    assert second.get(k_base) == {"median_ms": 10.0, "p90_ms": 11.0}
    second.put(k_ad, {"median_ms": 12.0, "p90_ms": 13.0})
    second.save_sweep_copy([k_base, k_ad])
    assert set(json.loads((tmp_path / "b" / "state" / "latency_profile.json").read_text())) == {k_base, k_ad}
    assert set(json.loads(user.read_text())) == {k_base, k_ad}  # merged, nothing lost
    assert set(json.loads((tmp_path / "a" / "state" / "latency_profile.json").read_text())) == {k_base}
    # the trial-side key on another GPU type maps onto the target's key
    assert with_device(profile_key("m", 3, 128, "NVIDIA L4", "base"), "NVIDIA H100") == profile_key(
        "m", 3, 128, "NVIDIA H100", "base"
    )
    # an unreadable cache is ignored, not fatal
    user.write_text("{")
    assert LatencyProfile(None, user).get(k_base) is None


def test_profile_hits_are_shared_with_the_trials_once(tmp_path: Path) -> None:
    """Every figure a study uses reaches the trials' cache (``share``), a user-cache hit included,
    once; nothing else does, and a restored copy shares again (its driver's actor may be new)."""
    from search.engine.latency_profile import LatencyTarget, ProfiledLatency

    key = profile_key("maskdino_tiny", 3, 64, "cpu", "base")
    other = profile_key("maskdino_tiny", 3, 128, "cpu", "base")  # another sweep's entry
    profile = LatencyProfile(None, None, {key: {"median_ms": 5.0, "p90_ms": 6.0}, other: {"median_ms": 9.0}})
    shared: list[str] = []
    lat = ProfiledLatency(
        profile,
        LatencyTarget(),
        "cpu",
        spec_for=lambda p: dict(p),
        key_for=lambda spec, device: key,
        share=lambda k, v: shared.append(k),
    )
    assert lat.costs({"method": "full_head"}) == {"latency_ms": 5.0, "latency_p90_ms": 6.0}
    lat.costs({"method": "class_mask"})
    lat.prefetch([{"method": "lora"}])  # a hit: no measurement, no second share
    assert shared == [key] and lat.measured == 0
    assert lat.__getstate__()["shared"] == set()


def test_isolated_measurement_times_the_specs_interleaved_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The profile's task builds each deployed model as a trial does and times them round-robin,
    at most INTERLEAVE at once, one result per spec in order (no Ray: the task's body)."""
    import models.latency
    from search.engine import latency_profile

    calls: list[list[str]] = []
    real = models.latency.measure_latency_interleaved

    def spy(models_: dict, *a: object, **kw: object) -> dict:
        calls.append(sorted(models_))
        return real(models_, *a, **kw)

    monkeypatch.setattr(models.latency, "measure_latency_interleaved", spy)
    monkeypatch.setattr(latency_profile, "INTERLEAVE", 2)
    spec = {
        "model": "maskdino_tiny",
        "domain": "clean",
        "method": "full_head",
        "method_params": {},
        "lr": 1e-3,
        "iterations": 1,
        "image_size": 32,
        "num_train_images": 1,
        "num_eval_images": 1,
        "latency_runs": 2,
        "latency_warmup": 0,
    }
    adapter = {**spec, "method": "adapter", "method_params": {"repetitions": 2}}
    device, res = latency_profile._measure_in_isolation([spec, adapter, spec], 1)
    assert device.startswith("cpu") and len(res) == 3
    assert calls == [["0", "1"], ["0"]]
    assert all(r["runs"] == 2 and r["median_ms"] > 0 for r in res)
