"""`peftsweep pretrain`: a few iterations write a loadable checkpoint + the AP json; a trial uses it."""

from __future__ import annotations

import json
import math

import pytest


def test_pretrain_writes_checkpoint_and_report_then_a_trial_loads_it(tmp_path, cli) -> None:
    out = tmp_path / "base"
    argv = ["pretrain", "--out", str(out), "--iterations", "3", "--batch-size", "2",
            "--num-train-images", "4", "--num-eval-images", "2", "--log-every", "1"]  # fmt: skip
    assert cli(argv) == 0
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["iterations"] == 3 and math.isfinite(summary["final_loss"])
    assert summary["classes"] == ["disk", "box", "triangle", "blob"]
    assert 0.0 <= summary["eval"]["ap"] <= 100.0 and summary["eval"]["num_images"] == 2
    assert summary["total_minutes"] > 0 and summary["cpu_minutes"] > 0
    assert (out / "base.pt").is_file()
    # The pretraining domain's feature statistics sit beside the checkpoint, keyed to this base,
    # where method selection looks for its reference domain.
    assert summary["domain_stats"]["domains"] == ["source"] and summary["domain_stats"]["error"] == ""
    assert summary["domain_stats"]["seconds"] < 10
    from search.selection.domain_stats import build_feature_model, domain_stats_from_images, synthetic_images
    from search.selection.similarity import feature_key_for, list_domain_stats, load_domain_stats

    fm = build_feature_model("maskdino_tiny", str(out / "base.pt"))
    fresh = domain_stats_from_images(fm, synthetic_images("source", 4, 0), 128)
    key = feature_key_for("maskdino_tiny", str(out / "base.pt"), fresh.levels)
    assert [r["domain"] for r in list_domain_stats(out, key)] == ["source"]
    stored = load_domain_stats(out, "source", key)
    assert stored.count == 64 and stored.dim == fresh.dim

    # The checkpoint is the base of a trial on a 1-class domain: class head re-initialised + trained.
    from models.trial import prepare_trial

    prepared = prepare_trial(
        {"domain": "clean", "base_checkpoint": str(out / "base.pt"), "iterations": 1, "num_train_images": 2,
         "num_eval_images": 1, "latency_warmup": 0, "latency_runs": 1}
    )  # fmt: skip
    report = prepared.load_report
    assert report.loaded and not report.unexpected
    assert report.reinitialised  # 4 -> 1 classes
    trainable = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert any(k in trainable for k in report.reinitialised) or all(
        any(t.startswith(k) for t in trainable) for k in report.reinitialised
    )
    record = prepared.train_and_evaluate()
    assert record.status == "completed"


def test_pretrain_bad_arguments_exit_2(tmp_path, cli, capsys) -> None:
    assert cli(["pretrain", "--out", str(tmp_path), "--iterations", "0"]) == 2
    assert "--iterations" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["pretrain"])  # --out is required


def test_pretrain_restores_the_thread_setting(tmp_path) -> None:
    import torch

    from models.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(2)
    cfg = PretrainConfig(iterations=1, batch_size=1, num_train_images=1, num_eval_images=1, threads=1)
    summary = pretrain(tmp_path, cfg, log=lambda m: None)
    assert summary["threads"] == 1 and torch.get_num_threads() == 2
