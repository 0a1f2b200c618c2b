"""Model families register themselves on first lookup (models.families): no caller has to import
a family package first, and light imports stay light."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_seem_is_found_without_importing_it_first() -> None:
    out = _run(
        """
        import sys
        from models import build_model
        from models.peft import apply_method, build_method_config
        from models.errors import UserError
        assert "models.seem" not in sys.modules
        # LoRA validation knows SEEM's target sets before any model exists
        cfg = build_method_config("lora", targets=["enc_self_qv", "dec_cross_qv"])
        assert "models.seem" in sys.modules
        try:
            build_method_config("lora", targets=["no_such_set"])
        except UserError as exc:
            assert "enc_self_qv" in str(exc) and "msda" in str(exc), exc
        else:
            raise AssertionError("unknown target set accepted")
        model = build_model("seem_tiny", num_classes=2)
        assert type(model).__name__ == "SEEM"
        info = apply_method(model, cfg)
        print(len(info.injected))
        """
    )
    # seem_tiny: 2 encoder self-attentions + 3 decoder cross-attentions, each adapted on q and v
    assert out.split()[-1] == "10"


def test_search_config_knows_seem_names_in_a_fresh_process() -> None:
    out = _run(
        """
        from search.config import LoraSpace
        space = LoraSpace(targets=[["enc_self_qv", "dec_self_qv", "dec_cross_qv"], ["msda"], []])
        print(len(space.targets))
        """
    )
    assert out.split()[-1] == "3"


def test_light_imports_do_not_load_families_or_torch() -> None:
    out = _run(
        """
        import sys
        import models.errors, models.families
        print(sorted(m for m in ("torch", "models.seem", "models.registry") if m in sys.modules))
        """
    )
    assert out.strip() == "[]"


def test_load_families_is_idempotent_and_registers_seem() -> None:
    from models.families import FAMILY_PACKAGES, load_families
    from models.peft.targets import PEFT_SPECS
    from models.registry import MODEL_CONFIGS, available_models

    load_families()
    load_families()
    assert FAMILY_PACKAGES["seem"] == "models.seem"
    assert {"seem_tiny", "seem_focalt", "seem_focall", "maskdino_tiny"} <= set(available_models())
    assert MODEL_CONFIGS["seem_tiny"].family == "seem"
    assert set(PEFT_SPECS) >= {"maskdino", "seem"}
