"""The selection rule on recorded results: feasibility, cheapest choice, runner-up, infeasible case."""

from __future__ import annotations

import math
from typing import Any

import pytest

from models.errors import UserError
from search.selection.decision import (
    Budgets,
    Candidate,
    candidate_from_record,
    config_key,
    config_label,
    decide,
)


def rec(method: str, ap: float, params: int, pct: float, lat: float, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method,
        "status": "completed",
        "ap": ap,
        "trainable_params": params,
        "trainable_pct": pct,
        "latency_ms": lat,
        "lr": 1e-3,
        "iterations": 40,
    }
    row.update(extra)
    return row


# A pilot shaped like the paper's table: full head best and biggest, LoRA smallest and base-speed,
# adapters in between and slower per repetition.
PILOT = [
    rec("lora", 40.0, 5_000, 0.17, 10.0, lora_rank=4, lora_alpha=8.0),
    rec("lora", 42.0, 9_000, 0.30, 10.0, lora_rank=8, lora_alpha=8.0),
    rec("adapter", 43.0, 20_000, 0.70, 11.5, adapter_repetitions=2),
    rec("adapter", 43.5, 30_000, 1.05, 12.5, adapter_repetitions=3),
    rec("full_head", 45.0, 900_000, 30.0, 10.0),
]


def test_labels_and_keys_normalise_parquet_floats() -> None:
    a = {"method": "lora", "lora_rank": 8.0, "lora_alpha": 8.0, "adapter_repetitions": math.nan, "lr": 0.001}
    b = {"method": "lora", "lora_rank": 8, "lora_alpha": 8.0, "lr": 0.001}
    assert config_key(a) == config_key(b)
    assert config_label(a) == "lora r8"
    assert config_label({"method": "adapter", "adapter_repetitions": 3.0}) == "adapter x3"
    assert config_label({"method": "full_head"}) == "full_head"


def test_cheapest_within_fraction_is_chosen() -> None:
    # 0.9 * 45 = 40.5: lora r4 (40.0) is out, lora r8 (42.0) is the cheapest in.
    d = decide(PILOT, Budgets(latency_budget_ms=20, param_budget_pct=5, min_ap_fraction=0.9))
    assert d.feasible
    assert d.chosen is not None and d.chosen.label == "lora r8"
    assert d.runner_up is not None and d.runner_up.label == "adapter x2"
    assert d.best is not None and d.best.label == "full_head"
    assert d.required_ap == pytest.approx(40.5)
    assert d.violations["full_head"] == ["trainable 30.000% > budget 5%"]
    assert any("AP 40.00 < required 40.50" in v for v in d.violations["lora r4"])
    text = " ".join(d.explanation)
    assert "Chosen: lora r8" in text and "Runner-up: adapter x2" in text
    # What the runner-up would cost relative to the choice.
    assert "+11,000 trainable params" in text and "+1.50 ms" in text and "+1.00 AP" in text


def test_lower_fraction_prefers_fewer_params() -> None:
    d = decide(PILOT, Budgets(min_ap_fraction=0.85))
    assert d.chosen is not None and d.chosen.label == "lora r4"


def test_params_tie_breaks_on_latency() -> None:
    rows = [
        rec("adapter", 43.0, 10_000, 0.3, 12.0, adapter_repetitions=2),
        rec("lora", 43.0, 10_000, 0.3, 10.0, lora_rank=8),
    ]
    d = decide(rows, Budgets(min_ap_fraction=0.9))
    assert d.chosen is not None and d.chosen.label == "lora r8"


def test_latency_budget_excludes_adapters() -> None:
    d = decide(PILOT, Budgets(latency_budget_ms=10.5, param_budget_pct=5, min_ap_fraction=0.95))
    # 0.95 * 45 = 42.75: only adapters reach it, and they are too slow -> infeasible.
    assert not d.feasible and d.chosen is None
    assert d.closest is not None
    # adapter x2 misses latency by 1/10.5 = 0.095; lora r8 misses AP by 0.75/42.75 = 0.018.
    assert d.closest.label == "lora r8"
    assert "No method meets the budgets. Closest: lora r8" in " ".join(d.explanation)


def test_only_full_head_feasible_runner_up_names_broken_budget() -> None:
    d = decide(PILOT, Budgets(min_ap_fraction=1.0))
    assert d.chosen is not None and d.chosen.label == "full_head"
    # Nothing else is feasible: the runner-up is the best other one, with its reason.
    assert d.runner_up is not None and d.runner_up.label == "adapter x3"
    assert "AP 43.50 < required 45.00" in " ".join(d.explanation)


def test_failed_trials_never_chosen_and_all_failed_is_infeasible() -> None:
    failed = rec("lora", math.nan, 1_000, 0.01, 1.0, lora_rank=2, status="failed", error="OOM")
    d = decide([failed, *PILOT], Budgets(min_ap_fraction=0.5))
    assert d.chosen is not None and d.chosen.label == "lora r4"
    assert d.violations["lora r2"] == ["trial failed: OOM"]
    d2 = decide([failed], Budgets(min_ap_fraction=0.5))
    assert not d2.feasible and d2.closest is None and d2.best is None


def test_duplicate_labels_get_suffixes() -> None:
    rows = [
        rec("lora", 42.0, 9_000, 0.3, 10.0, lora_rank=8, lr=1e-3),
        rec("lora", 41.0, 9_000, 0.3, 10.0, lora_rank=8, lr=3e-4),
    ]
    d = decide(rows, Budgets(min_ap_fraction=0.9))
    assert set(d.violations) == {"lora r8", "lora r8 #2"}
    assert d.chosen is not None and d.chosen.ap == 42.0  # same cost -> higher AP first


def test_json_round_trip_shape() -> None:
    d = decide(PILOT, Budgets(latency_budget_ms=20, param_budget_pct=5, min_ap_fraction=0.9))
    out = d.to_dict()
    assert out["feasible"] is True and out["chosen"]["label"] == "lora r8"
    assert out["chosen"]["params"]["lora_rank"] == 8
    assert out["budgets"] == {"latency_budget_ms": 20, "param_budget_pct": 5, "min_ap_fraction": 0.9}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_ap_fraction": 0.0},
        {"min_ap_fraction": 1.2},
        {"latency_budget_ms": -1.0},
        {"param_budget_pct": 150.0},
    ],
)
def test_bad_budgets_are_user_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UserError):
        Budgets(**kwargs)


def test_row_without_method_is_user_error() -> None:
    with pytest.raises(UserError, match="method"):
        candidate_from_record({"ap": 1.0})
    assert isinstance(candidate_from_record(PILOT[0]), Candidate)
