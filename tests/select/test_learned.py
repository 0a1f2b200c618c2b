"""'No pilot learned anything' and the AP spread of seeds in the decision."""

from __future__ import annotations

import math
from typing import Any

import pytest

from search.selection.decision import Budgets, decide, merge_seeds
from search.selection.learned import DEFAULT_AP_NOISE, likely_causes, nothing_learned


def rec(method: str, ap: float, params: int, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "status": "completed",
        "ap": ap,
        "trainable_params": params,
        "trainable_pct": params / 1e4,
        "latency_ms": 10.0,
        "lr": 1e-3,
        "iterations": 40,
        **extra,
    }


def test_seven_zero_pilots_learned_nothing() -> None:
    # The reported case: seven pilot trials (three LoRA r4 differing only in lr) all at AP 0.0.
    rows = [rec("lora", 0.0, 5_000, lora_rank=4, lr=lr) for lr in (1e-4, 3e-4, 1e-3)]
    rows += [rec("lora", 0.0, 9_000, lora_rank=8), rec("adapter", 0.0, 20_000, adapter_repetitions=2)]
    rows += [rec("adapter", 0.0, 30_000, adapter_repetitions=3), rec("full_head", 0.0, 900_000)]
    why = nothing_learned(rows)
    assert why is not None and "at or near 0" in why and "7 completed" in why


def test_within_noise_of_the_untrained_model() -> None:
    rows = [rec("lora", 21.0, 5_000, lora_rank=4), rec("full_head", 22.5, 900_000)]
    why = nothing_learned(rows, untrained_ap=21.0)
    assert why is not None and "within noise" in why and f"{DEFAULT_AP_NOISE:.2f}" in why
    # A clear gain over the untrained model is learning; a measured noise level is used when given.
    assert nothing_learned(rows, untrained_ap=15.0) is None
    assert nothing_learned(rows, untrained_ap=21.0, noise=1.0) is None
    # Unknown untrained AP: only the near-zero test applies.
    assert nothing_learned(rows) is None
    # Failed trials are not evidence either way; none completed is the decision's case, not this one.
    assert nothing_learned([{"status": "failed", "ap": math.nan}]) is None


def test_likely_causes_name_the_short_inputs() -> None:
    causes = likely_causes(iterations=5, train_images=3)
    assert causes[0].startswith("too few iterations (5")
    assert causes[1].startswith("too few training images (3")
    assert "does not transfer" in causes[-1]
    assert likely_causes(iterations=200, train_images=500) == [causes[-1]]
    # A base that already scores (untrained AP 17.5) transfers: named first, 'does not transfer' not at all.
    works = likely_causes(iterations=200, train_images=500, untrained_ap=17.5)
    assert len(works) == 1 and works[0].startswith("the base already does well here (AP 17.50")
    assert likely_causes(iterations=200, train_images=500, untrained_ap=0.2) == [causes[-1]]


def test_seeds_merge_into_mean_and_sd() -> None:
    rows = [rec("lora", ap, 9_000, lora_rank=8, seed=s) for s, ap in enumerate((40.0, 42.0, 44.0))]
    rows.append(rec("adapter", 43.0, 20_000, adapter_repetitions=2))
    merged = merge_seeds([decide([r], Budgets()).candidates[0] for r in rows])
    lora = merged[0]
    assert lora.seeds == 3 and lora.ap == pytest.approx(42.0) and lora.ap_sd == pytest.approx(2.0)
    assert lora.ap_text == "42.00 ± 2.00 (3 seeds)" and merged[1].ap_text == "43.00"


def test_top_two_within_noise_is_said() -> None:
    # LoRA r8 42 +- 2 (3 seeds) vs adapters 43.0 +- 1.0 (2 seeds): 1.0 apart < hypot(2, 1) = 2.24.
    rows = [rec("lora", ap, 9_000, lora_rank=8) for ap in (40.0, 42.0, 44.0)]
    rows += [rec("adapter", ap, 20_000, adapter_repetitions=2) for ap in (42.2928932, 43.7071068)]
    d = decide(rows, Budgets(min_ap_fraction=0.9))
    assert d.top_two_within_noise
    line = [e for e in d.explanation if e.startswith("The top two by AP")][0]
    assert "adapter x2 (43.00 ± 1.00 (2 seeds))" in line and "lora r8 (42.00 ± 2.00 (3 seeds))" in line
    assert "within noise: 1.00 AP apart, noise 2.24 AP" in line
    # One seed each: the typical seed noise decides; 5 AP apart is more than that.
    d2 = decide([rec("lora", 38.0, 9_000, lora_rank=8), rec("full_head", 43.0, 900_000)], Budgets())
    assert not d2.top_two_within_noise
    assert any("differ by 5.00 AP, more than the noise" in e for e in d2.explanation)
