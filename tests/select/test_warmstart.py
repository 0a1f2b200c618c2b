"""Warm start: the nearest earlier domain's best configuration is tried first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.results.store import ResultStore
from search.selection.decision import Budgets, config_key
from search.selection.pilots import _run_pilot
from search.selection.shift import feature_stats
from search.selection.similarity import record_domain_stats
from search.selection.warmstart import neighbour_points, parse_pilot, pilot_matrix, warm_start_queue

KEY = "maskdino_tiny|random-init|res2+res3"


def _row(tid: str, domain: str, ap: float, pct: float, **params: Any) -> dict[str, Any]:
    return {
        "trial_id": tid,
        "domain": domain,
        "status": "completed",
        "ap": ap,
        "trainable_params": int(pct * 1e4),
        "trainable_pct": pct,
        "latency_ms": 10.0 + params.get("adapter_repetitions", 0),
        "lr": 3e-4,
        "iterations": 200,
        **params,
    }


def _history(tmp: Path) -> Path:
    """An earlier sweep folder: 'near' prefers adapters x4, 'far' prefers LoRA r16."""
    rng = np.random.default_rng(0)
    out = tmp / "old_sweep"
    ResultStore(out / "results").upsert_trials(
        [
            _row(
                "n1",
                "near",
                30.0,
                0.2,
                method="lora",
                lora_rank=8,
                lora_alpha=8.0,
                lora_targets="sampling_offsets+value_proj",
            ),
            _row(
                "n2",
                "near",
                41.0,
                1.5,
                method="adapter",
                adapter_repetitions=4,
                adapter_placement="enc_self+dec_self+dec_cross",
                adapter_residual="both",
                adapter_reduction=4,
            ),
            _row(
                "f1",
                "far",
                44.0,
                0.4,
                method="lora",
                lora_rank=16,
                lora_alpha=8.0,
                lora_targets="sampling_offsets+value_proj",
            ),
            {**_row("f2", "far", 50.0, 0.1, method="lora", lora_rank=2), "status": "failed"},
        ]
    )
    record_domain_stats(out, "near", feature_stats(rng.normal(0.3, size=(50, 4))), feature_key=KEY)
    record_domain_stats(out, "far", feature_stats(rng.normal(4.0, size=(50, 4))), feature_key=KEY)
    return out


def test_neighbours_best_config_goes_first(tmp_path: Path) -> None:
    hist = _history(tmp_path)
    query = feature_stats(np.random.default_rng(1).normal(0.0, size=(50, 4)))
    budgets = Budgets(min_ap_fraction=0.9)
    warm = neighbour_points([hist], query, feature_key=KEY, budgets=budgets, k=2)
    assert [w.origin for w in warm] == ["neighbour near", "neighbour far"]
    assert warm[0].params["method"] == "adapter" and warm[0].params["adapter_repetitions"] == 4
    assert warm[0].distance < warm[1].distance
    # The failed trial (AP 50) is not the far domain's best.
    assert warm[1].params["lora_rank"] == 16
    queue = warm_start_queue(pilot_matrix(iterations=20), warm)
    assert queue[0].params["adapter_repetitions"] == 4 and queue[0].origin == "neighbour near"
    # Warm points keep their lr but train as long as the pilot (comparable APs).
    assert queue[0].params["lr"] == 3e-4 and queue[0].params["iterations"] == 20
    assert [w.origin for w in queue[2:]] == ["pilot"] * 5
    # Optuna's enqueued study hands them out in exactly this order.
    seen: list[dict[str, Any]] = []

    def fake(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        return {
            "status": "completed",
            "ap": 1.0,
            "trainable_pct": 1.0,
            "latency_ms": 1.0,
            "trainable_params": 1,
        }

    rows = _run_pilot(queue, fake, "new", "sid", lambda _m: None)
    assert [config_key(p) for p in seen] == [config_key(w.params) for w in queue]
    assert rows[0]["origin"] == "neighbour near" and rows[0]["trial_id"] == "sid-000"


def test_budgets_change_the_neighbours_pick(tmp_path: Path) -> None:
    hist = _history(tmp_path)
    query = feature_stats(np.random.default_rng(1).normal(0.0, size=(50, 4)))
    # near's adapters x4 (1.5 %) break a 1 % budget; LoRA r8 is then near's pick, adapters its best-AP.
    warm = neighbour_points(
        [hist], query, feature_key=KEY, budgets=Budgets(param_budget_pct=1.0, min_ap_fraction=0.5), k=1
    )
    assert [w.params["method"] for w in warm] == ["lora", "adapter"]


def test_duplicates_of_pilot_are_dropped_and_no_history_is_plain_pilot(tmp_path: Path) -> None:
    pilot = pilot_matrix(iterations=20)
    dup = {**pilot[1], "iterations": 500}  # same config as pilot lora r8, other length
    from search.selection.warmstart import WarmPoint

    queue = warm_start_queue(pilot, [WarmPoint(dup, "neighbour x", 0.1)])
    assert len(queue) == len(pilot) and queue[0].origin == "neighbour x"
    assert queue[0].params["lora_rank"] == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    query = feature_stats(np.random.default_rng(2).normal(size=(10, 4)))
    assert neighbour_points([empty], query, feature_key=KEY, budgets=Budgets(), k=2) == []

    # A failing trial function is recorded as failed, not raised.
    def boom(_p: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("kaput")

    rows = _run_pilot(warm_start_queue(pilot[:1], []), boom, "d", "s", lambda _m: None)
    assert rows[0]["status"] == "failed" and "kaput" in rows[0]["error"]


def test_parse_pilot() -> None:
    from models.errors import UserError

    assert parse_pilot("lora:4, adapter:2,full_head") == [("lora", 4), ("adapter", 2), ("full_head", None)]
    labels = [p["method"] for p in pilot_matrix()]
    assert labels == ["lora", "lora", "adapter", "adapter", "full_head"]
    assert [p.get("lora_rank") for p in pilot_matrix()][:2] == [4, 8]
    for bad in ("lora", "adapter:0", "full_head:2", "prefix:3", ""):
        with pytest.raises(UserError, match="--pilot"):
            parse_pilot(bad)


def test_record_sweep_domains_makes_a_history(tmp_path: Path) -> None:
    from search.selection.domain_stats import (
        build_feature_model,
        domain_stats_from_images,
        record_sweep_domains,
        synthetic_images,
    )
    from search.selection.similarity import feature_key_for, list_domain_stats, nearest_domains

    names = record_sweep_domains(
        tmp_path, [{"name": "street"}, {"name": "xray", "synthetic": True}], model_name="maskdino_tiny",
        base_checkpoint=None, num_images=6, image_size=64,
    )  # fmt: skip
    assert names == ["street", "xray"]
    key = feature_key_for("maskdino_tiny", None, ["res2", "res3", "res4", "res5"])
    assert sorted(str(r["domain"]) for r in list_domain_stats(tmp_path, key)) == ["street", "xray"]
    model = build_feature_model("maskdino_tiny", None)
    query = domain_stats_from_images(model, synthetic_images("xray", 6, seed=9, image_size=64), 64)
    assert [n.domain for n in nearest_domains(tmp_path, query, 2, feature_key=key)] == ["xray", "street"]


def test_reference_statistics_resolution(tmp_path: Path) -> None:
    from models.errors import UserError
    from search.selection.outcome import SelectionSettings
    from search.selection.pilots import _reference_stats
    from search.selection.similarity import feature_key_for

    ckpt_dir = tmp_path / "base"
    ckpt_dir.mkdir()
    ckpt = ckpt_dir / "base.pt"
    ckpt.write_bytes(b"not really weights")
    key = feature_key_for("maskdino_tiny", str(ckpt), ["res2"])
    rng = np.random.default_rng(0)
    stored = feature_stats(rng.normal(size=(10, 3)))
    record_domain_stats(ckpt_dir, "source", stored, feature_key=key)  # stored with the base
    hist = tmp_path / "hist"
    other = feature_stats(rng.normal(size=(10, 3)))
    record_domain_stats(hist, "coco", other, feature_key=key)
    settings = SelectionSettings("x.json", "imgs", Budgets(), base_checkpoint=str(ckpt), history=[str(hist)])
    # The model is never touched when statistics are stored.
    got = _reference_stats(settings, "source", None, key)
    np.testing.assert_array_equal(got.mean, stored.mean)
    np.testing.assert_array_equal(_reference_stats(settings, "coco", None, key).cov, other.cov)
    with pytest.raises(UserError, match="--reference-domain"):
        _reference_stats(settings, "imagenet", None, key)
