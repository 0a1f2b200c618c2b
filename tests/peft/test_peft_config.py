"""Method configs: defaults, coercion, round trip, and bad values rejected naming the field."""

from __future__ import annotations

import pytest

from models.errors import UserError
from models.peft import METHODS, build_method_config, config_from_dict
from models.peft.adapter import AdapterConfig
from models.peft.lora import LoraConfig


def test_registry_names() -> None:
    assert set(METHODS) == {"lora", "loha", "ia3", "adapter", "full_head", "decoder_only", "class_mask"}


def test_paper_defaults() -> None:
    lora = build_method_config("lora")
    assert isinstance(lora, LoraConfig)
    # targets () = the model family's default_lora_targets (tests/peft/test_lora_family_default.py)
    assert (lora.rank, lora.alpha, lora.targets, lora.mha_slices) == (8, 8.0, (), ("q", "v"))
    assert (lora.use_dora, lora.use_rslora, lora.init) == (False, False, "default")  # plain LoRA
    ad = build_method_config("adapter")
    assert isinstance(ad, AdapterConfig)
    assert (ad.repetitions, ad.reduction, ad.residual, ad.activation) == (1, 4, "kappa+lambda", "relu")
    assert ad.placement == ("enc_self", "dec_self", "dec_cross")


def test_loose_values_are_coerced() -> None:
    cfg = build_method_config(
        "adapter", repetitions="3", placement="enc_self, dec_cross", train_heads="false"
    )
    assert isinstance(cfg, AdapterConfig)
    assert cfg.repetitions == 3 and cfg.placement == ("enc_self", "dec_cross") and cfg.train_heads is False
    assert build_method_config("lora", targets=["msda"], alpha=16) == LoraConfig(
        targets=("msda",), alpha=16.0
    )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_round_trip(name: str) -> None:
    cfg = build_method_config(name, extra_trainable=["foo\\.bar"])
    assert config_from_dict(cfg.to_dict()) == cfg


BAD: list[tuple[str, dict[str, object], str]] = [
    ("lora", {"rank": 0}, "lora.rank must be 1..1024, got 0"),
    ("lora", {"rank": "x"}, "lora.rank must be an integer"),
    ("lora", {"alpha": 0}, "lora.alpha must be > 0"),
    ("lora", {"dropout": 1.0}, "lora.dropout must be in [0, 1)"),
    ("lora", {"dropout": -0.1}, "lora.dropout must be in [0, 1)"),
    ("lora", {"targets": ["nope"]}, "lora.targets: unknown target set 'nope'"),
    # an empty list is the family default now (test_lora_family_default.py); an empty name is not
    ("lora", {"targets": [""]}, "lora.targets: unknown target set ''"),
    ("lora", {"targets": ["re:("]}, "lora.targets: bad regular expression"),
    ("lora", {"mha_slices": ["q", "x"]}, "lora.mha_slices must be one of q, k, v"),
    ("lora", {"rnk": 4}, "lora: unknown field 'rnk'"),
    ("adapter", {"repetitions": 5}, "adapter.repetitions must be 1..4, got 5"),
    ("adapter", {"repetitions": 0}, "adapter.repetitions must be 1..4, got 0"),
    ("adapter", {"placement": ["enc_cross"]}, "adapter.placement must be one of"),
    ("adapter", {"placement": []}, "adapter.placement must name at least one"),
    ("adapter", {"placement": ["enc_self", "enc_self"]}, "adapter.placement has duplicates"),
    ("adapter", {"residual": "both"}, "adapter.residual must be one of kappa, lambda, kappa+lambda"),
    ("adapter", {"reduction": 0}, "adapter.reduction must be >= 1"),
    ("adapter", {"activation": "tanh"}, "adapter.activation must be one of relu, gelu, silu"),
    ("adapter", {"train_heads": "maybe"}, "adapter.train_heads must be a boolean"),
    ("full_head", {"rank": 8}, "full_head: unknown field 'rank'"),
    ("class_mask", {"extra_trainable": ["("]}, "class_mask.extra_trainable: bad regular expression"),
    ("lora", {"init": "svd"}, "lora.init must be one of default, gaussian, pissa, olora; got 'svd'"),
    ("lora", {"use_dora": "sometimes"}, "lora.use_dora must be a boolean"),
    ("loha", {"rank": 0}, "loha.rank must be 1..1024, got 0"),
    ("loha", {"alpha": -1}, "loha.alpha must be > 0"),
    ("loha", {"module_dropout": 1.0}, "loha.module_dropout must be in [0, 1)"),
    ("loha", {"targets": ["nope"]}, "loha.targets: unknown target set 'nope'"),
    ("ia3", {"rank": 8}, "ia3: unknown field 'rank'"),
    ("ia3", {"mha_slices": ["x"]}, "ia3.mha_slices must be one of q, k, v"),
    ("nope", {}, "method must be one of lora, loha, ia3, adapter, full_head, decoder_only, class_mask"),
]


@pytest.mark.parametrize(
    ("name", "params", "message"), BAD, ids=[f"{b[0]}-{'-'.join(map(str, b[1]))}" for b in BAD]
)
def test_bad_config_names_the_field(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as exc:
        build_method_config(name, **params)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
