"""The pretrained base shipped in the package: it loads, and re-evaluating it on the held-out source
images of its recorded config gives its recorded source-domain AP."""

from __future__ import annotations

import json

import pytest

from models.pretrained import SHIPPED_BASE_DIR, shipped_base

pytestmark = pytest.mark.slow  # 64 images through the tiny model on the CPU (~10-20 s)


def test_shipped_base_reproduces_its_recorded_source_ap() -> None:
    import torch

    import models
    from models.checkpoint import load_checkpoint
    from models.data.mapper import InstanceMapper, build_augmentations
    from models.data.register import get_class_names, get_dataset_dicts, register_synthetic
    from models.evaluation import evaluate_model

    ckpt = shipped_base()
    info = json.loads((SHIPPED_BASE_DIR / "pretrain.json").read_text())
    cfg = info["config"]
    assert (cfg["model"], cfg["domain"], cfg["seed"]) == ("maskdino_tiny", "source", 0)
    assert info["iterations"] == cfg["iterations"]  # trained to the end, not stopped early
    assert ckpt.stat().st_size < 5_000_000  # small enough to ship

    val = register_synthetic(cfg["domain"], "val", cfg["seed"], cfg["num_eval_images"], cfg["image_size"])
    classes = get_class_names(val)
    assert classes == info["classes"]
    torch.manual_seed(0)
    model = models.build_model(cfg["model"], len(classes))
    report = load_checkpoint(model, ckpt, len(classes))
    assert report.loaded and not report.missing and not report.unexpected and not report.reinitialised
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = evaluate_model(
            model.eval(),
            get_dataset_dicts(val),
            InstanceMapper(False, build_augmentations(False, cfg["image_size"])),
            classes,
            device=torch.device("cpu"),
        )
    finally:
        torch.set_num_threads(threads)
    recorded = info["eval"]
    assert got.num_images == recorded["num_images"] == cfg["num_eval_images"]
    # Same weights, same images, same evaluator: equal up to float summation order (threads).
    assert got.ap == pytest.approx(recorded["ap"], abs=0.05)
    assert got.ap50 == pytest.approx(recorded["ap50"], abs=0.05)
    assert recorded["ap"] > 15.0  # a usable base: the demo's fine-tuning starts from here
