"""The search space over peft's methods: LoRA variants (DoRA, rsLoRA, inits), LoHa, IA3 -- config
fields, the parameters a trial gets, their translation to method configs, the grid, and the
deployed architecture the latency profile keys on."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from models.latency import deployed_architecture
from models.peft import build_method_config
from search.config import PARAM_COLUMNS, SearchSpaceConfig
from search.engine.space import SearchSpace, grid_points, method_kwargs


class PickTrial:
    """A trial that takes choice ``pick`` (modulo the number of choices) of every categorical."""

    def __init__(self, pick: int = 0) -> None:
        self.pick = pick
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = list(choices)[self.pick % len(choices)]
        if name == "method" and self.params.get("_method") is not None:
            value = self.params["_method"]
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.params[name] = low
        return low


def _config(params: dict[str, Any]) -> Any:
    name, kwargs = method_kwargs(params)
    return build_method_config(name, **kwargs)


def _sample(space: SearchSpaceConfig, method: str, pick: int = 0) -> dict[str, Any]:
    trial = PickTrial(pick)
    trial.params["_method"] = method
    SearchSpace(space)(trial)
    trial.params.pop("_method")
    return trial.params


SPACE = SearchSpaceConfig.model_validate(
    {
        "methods": ["lora", "loha", "ia3", "adapter"],
        "lora": {
            "rank": [4, 8],
            "use_dora": [False, True],
            "use_rslora": [True],
            "init": ["default", "pissa"],
        },
        "loha": {"rank": [2, 4], "alpha": [4.0], "targets": [[], ["msda"]]},
        "ia3": {"targets": [["msda", "dec_self_qv"], ["enc_ffn"]]},
    }
)


def test_default_space_keeps_plain_lora_parameters() -> None:
    params = _sample(SearchSpaceConfig(), "lora")
    assert set(params) == {"method", "lora_rank", "lora_alpha", "lora_targets", "lr", "iterations"}
    name, kwargs = method_kwargs(params)
    config = build_method_config(name, **kwargs)
    assert (config.use_dora, config.use_rslora, config.init) == (False, False, "default")  # type: ignore[attr-defined]


@pytest.mark.parametrize("pick", [0, 1])
def test_lora_variants_reach_the_method_config(pick: int) -> None:
    params = _sample(SPACE, "lora", pick)
    assert {"lora_dora", "lora_rslora", "lora_init"} <= set(params) <= set(PARAM_COLUMNS)
    config = _config(params)
    assert config.use_dora is [False, True][pick] and config.use_rslora is True  # type: ignore[attr-defined]
    assert config.init == ["default", "pissa"][pick]  # type: ignore[attr-defined]


def test_loha_and_ia3_parameters_reach_their_configs() -> None:
    loha = _sample(SPACE, "loha", 1)
    assert {k for k in loha if k.startswith("loha_")} == {"loha_rank", "loha_alpha", "loha_targets"}
    name, kwargs = method_kwargs(loha)
    assert build_method_config(name, **kwargs).to_dict() == {
        **build_method_config("loha").to_dict(),
        "rank": 4,
        "alpha": 4.0,
        "targets": ["msda"],
    }
    ia3 = _sample(SPACE, "ia3", 0)
    assert [k for k in ia3 if k.startswith("ia3_")] == ["ia3_targets"]
    name, kwargs = method_kwargs(ia3)
    assert build_method_config(name, **kwargs).targets == ("msda", "dec_self_qv")  # type: ignore[attr-defined]


def test_inactive_parameters_from_the_store_are_ignored() -> None:
    # a Parquet row of a plain LoRA trial carries nulls (NaN) in the variant columns
    row = {"method": "lora", "lora_rank": 8.0, "lora_alpha": 8.0, "lora_targets": "", "lora_dora": None}
    row.update({"lora_rslora": float("nan"), "lora_init": None, "loha_rank": float("nan")})
    assert method_kwargs(row) == ("lora", {"rank": 8, "alpha": 8.0, "targets": []})


def test_grid_covers_every_combination() -> None:
    points = grid_points(SPACE, [1e-3])
    by_method = {m: [p for p in points if p["method"] == m] for m in SPACE.methods}
    assert len(by_method["lora"]) == 2 * 1 * 1 * 2 * 1 * 2  # rank x alpha x targets x dora x rslora x init
    assert len(by_method["loha"]) == 2 * 1 * 2 and len(by_method["ia3"]) == 2
    combos = {(p["lora_rank"], p["lora_dora"], p["lora_init"]) for p in by_method["lora"]}
    assert combos == set(itertools.product([4, 8], [False, True], ["default", "pissa"]))
    for p in points:
        _config(p)  # every grid point is a valid method config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lora", {"init": ["svd"]}, "unknown init 'svd'"),
        ("loha", {"rank": [0]}, "every rank must be >= 1"),
        ("loha", {"alpha": [-1.0]}, "every alpha must be a positive number"),
        ("ia3", {"targets": [["nope"]]}, "unknown target 'nope'"),
        ("ia3", {"rank": [4]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_space_fields_are_named(field: str, value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SearchSpaceConfig.model_validate({"methods": ["lora", "loha", "ia3"], field: value})


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("lora", {"use_dora": True}),
        ("lora", {"init": "olora", "use_rslora": True}),
        ("loha", {}),
        ("ia3", {}),
    ],
)
def test_merged_peft_methods_deploy_the_base_architecture(method: str, params: dict[str, Any]) -> None:
    """They merge into the weights they adapt: the latency profile measures the base once for all."""
    assert deployed_architecture(build_method_config(method, **params)) == "base"
    assert deployed_architecture(build_method_config("adapter")) != "base"
