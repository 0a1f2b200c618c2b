"""Which sweeps get the pre-slot gate and the latency profile, and what the gate carries (no Ray)."""

from __future__ import annotations

import pickle
from pathlib import Path

from search.config import parse_config
from search.engine.gate import SweepGate, fill_values, uses_latency_profile
from search.engine.runner import _trials_share_latency, study_contexts

CUSTOM = "tests.fake:prepare"


def test_latency_profile_is_the_model_trials_default() -> None:
    cfg = parse_config({"domains": ["clean"]})
    assert uses_latency_profile(cfg) and _trials_share_latency(cfg)
    off = parse_config({"domains": ["clean"], "trial": {"latency_per_architecture": False}})
    assert not uses_latency_profile(off) and not _trials_share_latency(off)
    # A custom trial function keeps timing itself unless its config asks for the shared cache.
    custom = parse_config({"domains": ["clean"], "trial": {"function": CUSTOM}})
    assert not uses_latency_profile(custom) and not _trials_share_latency(custom)
    asked = parse_config(
        {"domains": ["clean"], "trial": {"function": CUSTOM, "latency_per_architecture": True}}
    )
    assert not uses_latency_profile(asked) and _trials_share_latency(asked)


def test_gate_pickles_without_its_runtime_state(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "domains": ["clean", "xray"],
            "constraints": [{"metric": "trainable_pct", "op": "<=", "value": 5}],
            "objectives": [
                {"name": "ap", "mode": "max", "ref": 1.5},
                {"name": "trainable_pct", "mode": "min"},
            ],
        }
    )
    gate = SweepGate(cfg, tmp_path, "sw", study_contexts(cfg, tmp_path, "sw"), str(tmp_path / "results"))
    assert gate.active and set(gate.contexts) == {"clean", "xray"}
    gate._costs["clean"] = None  # as if built
    gate._started = True
    back = pickle.loads(pickle.dumps(gate))
    assert back._costs == {} and back._started is False and back._latency is None
    assert back.contexts["xray"].domain["name"] == "xray"
    # a rejected point is told AP = the objective's reference (1.5 here), costs with their values
    assert fill_values(cfg) == {"ap": 1.5}
    none = SweepGate(
        parse_config({"domains": ["clean"], "trial": {"function": CUSTOM}}), tmp_path, "sw", {}, "r"
    )
    assert not none.active
