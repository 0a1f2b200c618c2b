"""Sweep config validation: every bad field gives a one-line UserError naming it (and allowed values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from models.errors import UserError
from search.config import absolutize_paths, dump_config, load_config, parse_config
from search.engine.space import SearchSpace, grid_points, method_kwargs

GOOD: dict[str, Any] = {"name": "t", "domains": ["clean", "xray"]}


def _with(path: str, value: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(yaml.safe_dump(GOOD))
    node = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return cfg


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        ("bogus", 1, ["bogus", "unknown key"]),
        ("space.bogus", 1, ["space.bogus", "unknown key"]),
        ("space.methods", ["lora", "dora"], ["space.methods", "dora", "allowed: lora, adapter, full_head"]),
        ("space.lora.rank", [0], ["space.lora.rank", ">= 1"]),
        ("space.lora.alpha", [-1.0], ["space.lora.alpha", "positive"]),
        ("space.lora.targets", [["msda", "qkv"]], ["space.lora.targets", "qkv", "allowed:", "msda"]),
        ("space.adapter.repetitions", [5], ["space.adapter.repetitions", "1..4"]),
        ("space.adapter.placement", [["enc_cross"]], ["space.adapter.placement", "enc_cross", "enc_self"]),
        ("space.adapter.residual", ["both"], ["space.adapter.residual", "kappa+lambda"]),
        ("space.adapter.reduction", [0], ["space.adapter.reduction", ">= 1"]),
        ("space.lr", {"low": 1e-2, "high": 1e-3}, ["space.lr", "low <= high"]),
        ("space.iterations", [0], ["space.iterations", ">= 1"]),
        ("objectives", [{"name": "mAP", "mode": "max"}], ["objectives[0].name", "mAP", "allowed:", "ap"]),
        ("objectives", [{"name": "ap", "mode": "up"}], ["objectives[0].mode", "'max' or 'min'"]),
        ("constraints", [{"metric": "latency_ms", "op": "<", "value": 50}], ["constraints[0].op", "'<='"]),
        ("constraints", [{"metric": "speed", "op": "<=", "value": 50}], ["constraints[0].metric", "speed"]),
        ("budget.trials", 0, ["budget.trials", "greater than or equal to 1"]),
        ("budget.gpus_per_trial", -0.5, ["budget.gpus_per_trial"]),
        ("budget.concurrency", "many", ["budget.concurrency"]),
        ("sampler.name", "cmaes", ["sampler.name", "'nsga2', 'tpe', 'gp' or 'random'"]),
        ("early_stopping.reduction_factor", 1.0, ["early_stopping.reduction_factor"]),
        ("early_stopping.grace_fraction", 1.0, ["early_stopping.grace_fraction", "less than 1"]),
        ("early_stopping.selection", "best", ["early_stopping.selection", "'epsnet', 'rank' or 'front'"]),
        ("trial.function", "no_colon", ["trial.function", "package.module:function"]),
        ("wandb.mode", "cloud", ["wandb.mode", "'auto', 'online', 'offline' or 'disabled'"]),
        ("domains", ["mars"], ["domains[0]", "mars", "allowed: source, clean"]),
        ("domains", [{"name": "d", "synthetic": False}], ["domains[0]", "train_json and train_images"]),
        ("domains", ["clean", "clean"], ["domains", "repeat"]),
        ("name", "bad name!", ["name", "letters"]),
        (
            "sampler.initial_points",
            [{"method": "lora", "rank": 8}],
            ["sampler.initial_points", "'rank'", "lora_rank"],
        ),
        ("sampler.initial_points", [{"lr": 1e-3}], ["sampler.initial_points", "needs a method"]),
        (
            "sampler.initial_points",
            [{"method": "full_head"}],
            ["initial_points[0].method", "not in space.methods"],
        ),
    ],
)
def test_bad_field_is_named(path: str, value: Any, expect: list[str]) -> None:
    with pytest.raises(UserError) as exc:
        parse_config(_with(path, value), source="cfg.yaml")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("cfg.yaml: ")
    for part in expect:
        assert part in msg, (part, msg)


def test_missing_domains_and_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="domains: required"):
        parse_config({"name": "x"})
    # an unknown key, a missing field and a wrong type at once: every one named, one per line
    with pytest.raises(UserError) as err:
        parse_config({"bogus": 1, "budget": {"trials": "ten"}}, source="c.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "c.yaml: domains: required (missing) (3 problems)"
    assert sorted(lines[1:]) == [
        "c.yaml: bogus: unknown key (not allowed)",
        "c.yaml: budget.trials: Input should be a valid integer, unable to parse string as an integer"
        " (got 'ten')",
    ]
    p = tmp_path / "c.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(UserError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a list")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(p)


def test_roundtrip_and_defaults(tmp_path: Path) -> None:
    cfg = parse_config(GOOD)
    assert cfg.metric_names == ["ap", "trainable_pct", "latency_ms"] and cfg.modes == ["max", "min", "min"]
    assert [d.name for d in cfg.domains] == ["clean", "xray"]
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == absolutize_paths(cfg, tmp_path)  # relative paths follow the file


class _Rec:
    """Records suggestions like an Optuna trial, choosing the first categorical value."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        v = self.method if name == "method" else list(choices)[0]
        self.params[name] = v
        return v

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        self.params[name] = low
        return low


def test_space_is_conditional() -> None:
    cfg = parse_config({**GOOD, "space": {"methods": ["lora", "adapter", "class_mask"]}})
    space = SearchSpace(cfg.space)
    lo, ad, cm = _Rec("lora"), _Rec("adapter"), _Rec("class_mask")
    for rec in (lo, ad, cm):
        space(rec)
    assert set(lo.params) == {"method", "lora_rank", "lora_alpha", "lora_targets", "lr", "iterations"}
    assert set(ad.params) == {
        "method",
        "adapter_repetitions",
        "adapter_placement",
        "adapter_residual",
        "adapter_reduction",
        "lr",
        "iterations",
    }
    assert set(cm.params) == {"method", "lr", "iterations"}
    # the default target set is empty: the model family's default_lora_targets
    assert method_kwargs(lo.params) == ("lora", {"rank": 2, "alpha": 8.0, "targets": []})
    assert method_kwargs(ad.params)[1]["placement"] == ["enc_self", "dec_self", "dec_cross"]
    n = len(grid_points(cfg.space, [1e-3]))
    assert n == 4 * 1 * 1 + 3 * 1 * 1 * 1 + 1


def test_param_names_match_the_space_columns() -> None:
    from search.config import PARAM_NAMES
    from search.engine.space import PARAM_COLUMNS

    assert tuple(PARAM_COLUMNS) == PARAM_NAMES


def test_shipped_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[2] / "search" / "configs" / "example_sweep.yaml")
    assert cfg.sampler.name == "tpe" and len(cfg.domains) == 2


def test_demo_config_is_valid() -> None:
    from search.cli.sweep import demo_config

    cfg = demo_config("runs/x", "runs/base/base.pt")
    assert cfg.budget.trials * len(cfg.domains) >= 12
    assert set(cfg.space.methods) == {"lora", "adapter"} and [d.name for d in cfg.domains] == [
        "clean",
        "xray",
    ]


def test_relative_paths_resolve_against_the_config_file(tmp_path) -> None:
    import yaml

    from search.config import load_config

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"name": "maskdino_tiny", "base_checkpoint": "base/base.pt"},
                "domains": [
                    {
                        "name": "mine",
                        "synthetic": False,
                        "train_json": "d/train.json",
                        "train_images": "s3://b/img",
                    }
                ],
                "output_dir": "out",
            }
        )
    )
    cfg = load_config(cfg_dir / "s.yaml")
    assert cfg.model.base_checkpoint == str(cfg_dir / "base" / "base.pt")
    assert cfg.domains[0].train_json == str(cfg_dir / "d" / "train.json")
    assert cfg.domains[0].train_images == "s3://b/img"  # URIs are left to the storage layer
    assert cfg.output_dir == str(cfg_dir / "out")


def test_lora_targets_default_to_the_family_recipe() -> None:
    from models.peft import build_method_config

    space = parse_config(GOOD).space
    assert space.lora.targets == [[]]
    # an empty set travels as "" and comes back as an empty LoRA targets tuple (= family default)
    name, params = method_kwargs({"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ""})
    assert params["targets"] == []
    assert build_method_config(name, **params).targets == ()  # type: ignore[attr-defined]
    explicit = parse_config({**GOOD, "space": {"lora": {"targets": [["enc_self_qv", "dec_cross_qv"], []]}}})
    assert explicit.space.lora.targets == [["enc_self_qv", "dec_cross_qv"], []]


def test_early_stopping_grace_is_a_fraction_of_the_longest_schedule_unless_given() -> None:
    from search.config import EarlyStopping

    assert EarlyStopping().grace_for(80) == 20  # default: rungs at 1/4 (and 3/4 with eta 3)
    assert EarlyStopping(grace_fraction=0.1).grace_for(5) == 1  # never below one iteration
    assert EarlyStopping(grace_iterations=7).grace_for(80) == 7
    assert EarlyStopping().selection == "epsnet" and EarlyStopping().reduction_factor == 3
