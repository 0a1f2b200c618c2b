"""An empty LoRA ``targets`` (the default) means the model family's ``default_lora_targets``,
resolved when the config is applied -- Mask DINO: msda + dec_self_qv; SEEM: enc/dec self- and
cross-attention q, v."""

from __future__ import annotations

import pytest

from models import build_model
from models.peft import apply_method, build_method_config, get_peft_spec
from models.peft.library.targets import resolve_targets
from models.peft.lora.config import LoraConfig


@pytest.mark.parametrize(
    ("name", "family_default"),
    [
        ("maskdino_tiny", ("msda", "dec_self_qv")),
        ("seem_tiny", ("enc_self_qv", "dec_self_qv", "dec_cross_qv")),
    ],
)
def test_default_targets_are_the_family_recipe(name: str, family_default: tuple[str, ...]) -> None:
    default = build_method_config("lora")
    assert isinstance(default, LoraConfig) and default.targets == ()
    model = build_model(name, num_classes=2)
    spec = get_peft_spec(model)
    assert spec.default_lora_targets == family_default
    explicit = LoraConfig(targets=family_default)
    implied = resolve_targets(model, default, spec)
    assert implied == resolve_targets(model, explicit, spec)
    assert implied  # the recipe selects modules
    info_default = apply_method(model, default)
    other = build_model(name, num_classes=2)
    info_explicit = apply_method(other, explicit)
    assert info_default.injected == info_explicit.injected
    assert info_default.counts == info_explicit.counts


def test_default_is_not_the_other_familys_recipe() -> None:
    # the old fixed default (Mask DINO's sets) selects nothing of SEEM's msda-free model
    from models.errors import UserError

    model = build_model("seem_tiny", num_classes=2)
    with pytest.raises(UserError, match="lora.targets"):
        apply_method(model, LoraConfig(targets=("msda", "dec_self_qv")))
