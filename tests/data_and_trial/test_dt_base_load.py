"""A trial's base checkpoint is verified: the load summary rides on the record, a file that does not
fit the model stops the trial before anything is trained, naming the file and its first keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from models import build_model
from models.checkpoint import save_checkpoint
from models.errors import UserError
from models.trial import prepare_trial

SPEC: dict[str, Any] = {
    "model": "maskdino_tiny",
    "domain": "clean",
    "method": "class_mask",
    "iterations": 0,
    "num_train_images": 2,
    "num_eval_images": 1,
    "image_size": 64,
    "latency_warmup": 0,
    "latency_runs": 1,
    "device": "cpu",
}


def test_base_load_summary_on_the_record(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = tmp_path / "base.pth"
    save_checkpoint(build_model("maskdino_tiny", num_classes=7), base)
    prepared = prepare_trial({**SPEC, "base_checkpoint": str(base)})
    report = prepared.load_report
    assert report.ok and len(report.reinitialised) == 3
    record = prepared.train_and_evaluate()
    row = record.to_dict()
    assert row["base_load"] == report.short()
    assert row["base_load"].startswith(f"loaded {len(report.loaded)}/{report.model_keys}, reinitialised 3,")
    assert row["base_load"].endswith(f"(classes 7 -> {len(prepared.class_names)})")
    assert row["start_iteration"] == 0
    assert prepare_trial(SPEC).train_and_evaluate().to_dict()["base_load"] == ""  # no base given


def test_base_of_another_model_stops_the_trial(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = tmp_path / "seem.pth"
    save_checkpoint(build_model("seem_tiny", num_classes=3), other)
    with pytest.raises(UserError) as err:
        prepare_trial({**SPEC, "base_checkpoint": str(other)})
    msg = str(err.value)
    assert (
        msg.startswith(f"{other}: checkpoint does not fit the model: ") and " of 247 keys would load" in msg
    )
    assert "missing (" in msg and "unexpected (" in msg
