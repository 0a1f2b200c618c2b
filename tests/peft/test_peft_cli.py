"""``peftsweep params``: output format, errors, and the paper's reported trainable shares."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from models import build_model
from models.peft import apply_method, build_method_config
from search.cli import main


def _params(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["params", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_params_json_matches_apply_method(capsys: pytest.CaptureFixture[str]) -> None:
    out = _params(capsys, "--model", "maskdino_tiny", "--num-classes", "3", "--method", "lora", "--rank", "4")
    torch.manual_seed(0)
    model = build_model("maskdino_tiny", 3)
    info = apply_method(model, build_method_config("lora", rank=4))
    assert (out["total"], out["trainable"]) == (info.total, info.trainable)
    assert out["trainable_pct"] == pytest.approx(info.trainable_pct, abs=1e-4)
    # the meta device (default) and real CPU weights count the same
    cpu = _params(capsys, "--model", "maskdino_tiny", "--num-classes", "3", "--method", "lora", "--rank", "4",
                  "--device", "cpu")  # fmt: skip
    assert cpu == out


def test_params_adapter_flags_and_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["params", "--model", "maskdino_tiny", "--num-classes", "3", "--method", "adapter", "--reps", "2",
            "--placement", "enc_self,dec_cross", "--residual", "kappa", "--reduction", "2"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "trainable_pct" in text and '"repetitions": 2' in text and '"residual": "kappa"' in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "adapter", "--reps", "5"], "--reps: must be 1..4, got 5"),
        (["--method", "adapter", "--residual", "both"], "--residual: must be one of"),
        (["--method", "adapter", "--rank", "8"], "--rank: does not apply to --method adapter"),
        (["--method", "lora", "--targets", "msda,bogus"], "lora.targets: unknown target set 'bogus'"),
        (["--method", "full_head", "--extra-trainable", "nothing"], "full_head.extra_trainable: pattern"),
    ],
)
def test_params_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["params", "--model", "maskdino_tiny", "--num-classes", "3", *argv]) == 2
    assert message in capsys.readouterr().err


# Paper (MAKE 2024), trainable share of the whole model. Its datasets have 1 (NDD20), 4, 8
# (Cityscapes) or 12 classes; with those counts ours reproduce the quoted figures to their printed
# precision. (model, classes, argv, percent, millions)
PAPER = [
    ("maskdino_r50", 1, ["--method", "full_head"], 54.91, None),
    ("maskdino_swinl", 1, ["--method", "full_head"], 12.37, 27.56),
    ("maskdino_swinl", 8, ["--method", "lora", "--rank", "8"], 0.24, 0.54),  # "r=8: 0.54 M = 0.24 %"
    ("maskdino_swinl", 1, ["--method", "lora", "--rank", "2"], 0.17, None),  # "LoRA r=2..16: 0.17-1.39 %"
    ("maskdino_r50", 12, ["--method", "lora", "--rank", "16"], 1.39, None),
    ("maskdino_swinl", 1, ["--method", "adapter", "--reps", "1"], 0.50, None),  # "adapters 0.50-6.35 %"
    ("maskdino_r50", 1, ["--method", "adapter", "--reps", "4"], 6.35, None),
]


@pytest.mark.parametrize(
    ("model", "classes", "argv", "pct", "millions"),
    PAPER,
    ids=[f"{p[0]}-{p[1]}-{'-'.join(p[2][1:])}" for p in PAPER],
)
def test_paper_trainable_shares(
    capsys: pytest.CaptureFixture[str],
    model: str,
    classes: int,
    argv: list[str],
    pct: float,
    millions: float | None,
) -> None:
    out = _params(capsys, "--model", model, "--num-classes", str(classes), *argv)
    assert round(float(out["trainable_pct"]), 2) == pct  # type: ignore[arg-type]
    if millions is not None:
        assert round(int(out["trainable"]) / 1e6, 2) == millions  # type: ignore[call-overload]


# Unique-parameter totals of the official models (IDEA-Research/MaskDINO, 80 classes), measured
# with detectron2: (total, backbone). Shared tensors (box MLP, decoder norm) count once.
OFFICIAL = {"maskdino_r50": (52_058_004, 23_454_912), "maskdino_swinl": (222_799_144, 195_201_204)}


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_full_head_counts_match_official_models(capsys: pytest.CaptureFixture[str], model: str) -> None:
    total, backbone = OFFICIAL[model]
    out = _params(capsys, "--model", model, "--num-classes", "80", "--method", "full_head")
    assert (out["total"], out["trainable"]) == (total, total - backbone)


# peft's LoRA variants and sibling methods at the paper's two Mask DINO sizes (80 classes, the
# family's default targets: offsets + value projections of 15 MSDA modules, q and v of 9 decoder
# self-attentions), checked against the papers' per-linear counts: LoRA r (in + out), DoRA adds
# one magnitude per output row, LoHa 2 r (in + out), IA3 one scale per output row.
@pytest.mark.parametrize("model", ["maskdino_r50", pytest.param("maskdino_swinl", marks=pytest.mark.slow)])
def test_params_of_peft_methods(capsys: pytest.CaptureFixture[str], model: str) -> None:
    from models.peft.targets import MASKDINO_SPEC

    assert MASKDINO_SPEC.default_lora_targets == ("msda", "dec_self_qv")
    with torch.device("meta"):
        base = build_model(model, 80)
    cfg: Any = base.cfg
    h, offsets = cfg.hidden_dim, cfg.nheads * cfg.total_num_feature_levels * cfg.n_points * 2
    linears = (cfg.enc_layers + cfg.dec_layers) * [(h, offsets), (h, h)] + cfg.dec_layers * 2 * [(h, h)]
    s_io, s_out = sum(i + o for i, o in linears), sum(o for _, o in linears)
    pred: Any = base.sem_seg_head.predictor
    heads = sum(
        p.numel() for m in (pred.class_embed, pred.mask_embed, pred._bbox_embed) for p in m.parameters()
    )
    common = ("--model", model, "--num-classes", "80")
    got = {
        name: _params(capsys, *common, "--method", *argv)
        for name, argv in {
            "lora": ["lora", "--rank", "8"],
            "dora": ["lora", "--rank", "8", "--dora"],
            "rslora_pissa": ["lora", "--rank", "8", "--rslora", "--init", "pissa"],
            "loha": ["loha", "--rank", "4"],
            "ia3": ["ia3"],
        }.items()
    }
    assert got["lora"]["trainable"] == 8 * s_io + heads
    assert got["dora"]["trainable"] == 8 * s_io + s_out + heads
    assert got["rslora_pissa"]["trainable"] == got["lora"]["trainable"]  # scaling and init add nothing
    assert got["loha"]["trainable"] == 2 * 4 * s_io + heads
    assert got["ia3"]["trainable"] == s_out + heads
    for out in got.values():  # the added tensors are all trainable; the base is unchanged
        assert int(out["total"]) - int(out["trainable"]) == int(got["ia3"]["total"]) - int(
            got["ia3"]["trainable"]
        )
    assert got["dora"]["config"]["use_dora"] is True and got["rslora_pissa"]["config"]["init"] == "pissa"


def test_params_flags_of_other_methods_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--model", "maskdino_tiny", "--method", "ia3", "--rank", "4"]) == 2
    assert "does not apply to --method ia3" in capsys.readouterr().err
    assert main(["params", "--model", "maskdino_tiny", "--method", "loha", "--dora"]) == 2
    assert "does not apply to --method loha" in capsys.readouterr().err
