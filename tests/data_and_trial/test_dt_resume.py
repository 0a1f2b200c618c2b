"""Trial resume: 6 iterations in one go == 3, save, a NEW prepared trial, load, 3 more."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from models.errors import UserError
from models.trial import STATE_FILE, PreparedTrial, prepare_trial

SPEC: dict[str, Any] = {
    "model": "maskdino_tiny",
    "domain": "street",
    "method": "lora",
    "iterations": 6,
    "eval_every": 3,
    "batch_size": 2,
    "num_train_images": 5,  # not a multiple of the batch: the resumed stream crosses an epoch
    "num_eval_images": 2,
    "latency_warmup": 0,
    "latency_runs": 1,
    "warmup_iters": 2,
}


def _trainable(p: PreparedTrial) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in p.model.named_parameters() if t.requires_grad}


def _copy(p: PreparedTrial) -> PreparedTrial:
    return dataclasses.replace(p, model=copy.deepcopy(p.model))


@pytest.fixture(scope="module")
def prepared() -> PreparedTrial:
    return prepare_trial(SPEC)


def test_resume_matches_uninterrupted_training(prepared: PreparedTrial, tmp_path: Path) -> None:
    start = _trainable(prepared)
    # Uninterrupted: 6 iterations, reports at 3 and 6.
    full = _copy(prepared)
    full_reports: list[tuple[int, dict[str, float]]] = []
    rec_full = full.train_and_evaluate(report=lambda it, m: full_reports.append((it, m)))
    assert rec_full.iterations == 6 and [it for it, _ in full_reports] == [3, 6]

    # Interrupted: save the state inside the report at 3 (as the Ray trainable does), stop there.
    first = _copy(prepared)

    def save_and_stop(it: int, m: dict[str, float]) -> bool:
        first.save_state(tmp_path)
        return True

    rec_first = first.train_and_evaluate(report=save_and_stop)
    assert rec_first.iterations == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temp file left behind
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    # trainable parameters only: the frozen base is rebuilt from the spec, never saved
    assert set(saved["tensors"]) == set(start) and len(saved["tensors"]) < len(first.model.state_dict())
    assert saved["data_order"]["batches_drawn"] == 3 and saved["data_order"]["num_images"] == 5

    # A new prepared trial of the same spec (what a retried Ray trial builds), then resume.
    second = prepare_trial(SPEC)
    assert all(torch.equal(t, start[n]) for n, t in _trainable(second).items())
    sd = second.model.state_dict(keep_vars=True)
    frozen = {k: v.detach().clone() for k, v in sd.items() if not v.requires_grad}
    assert second.load_state(tmp_path) == 3
    # the frozen base (FrozenBN statistics included) is exactly as prepared: only trainables load
    assert all(torch.equal(v, frozen[k]) for k, v in second.model.state_dict().items() if k in frozen)
    resumed_reports: list[tuple[int, dict[str, float]]] = []
    rec = second.train_and_evaluate(report=lambda it, m: resumed_reports.append((it, m)), start_iteration=3)
    assert rec.status == "completed" and rec.iterations == 6
    assert (rec.start_iteration, rec_full.start_iteration) == (3, 0)
    assert [it for it, _ in resumed_reports] == [6]
    assert rec.ap == rec_full.ap and rec.to_dict()["start_iteration"] == 3

    got, want = _trainable(second), _trainable(full)
    assert set(got) == set(want)
    moved = max(float((want[n] - start[n]).abs().max()) for n in want)
    assert moved > 1e-4  # training did something, so equality below is not vacuous
    for n in want:  # bit for bit: one thread, deterministic CPU kernels
        assert torch.equal(got[n], want[n]), n
    # Same loss history (final_loss = mean of the last 10 iterations, across the resume).
    assert rec.final_loss == rec_full.final_loss
    assert resumed_reports[0][1]["loss"] == full_reports[1][1]["loss"]
    # LR schedule continued, not restarted.
    assert second._scheduler.last_epoch == full._scheduler.last_epoch == 6


def test_resume_misuse_is_a_user_error(prepared: PreparedTrial, tmp_path: Path) -> None:
    p = _copy(prepared)
    with pytest.raises(UserError, match="trial state"):
        p.load_state(tmp_path / "missing")
    with pytest.raises(UserError, match="start_iteration"):
        p.train_and_evaluate(start_iteration=2)  # nothing loaded
    p.save_state(tmp_path)  # before training: iteration 0
    assert p.load_state(tmp_path) == 0
    other = dataclasses.replace(p, spec=dataclasses.replace(p.spec, lr=1e-3), model=copy.deepcopy(p.model))
    with pytest.raises(UserError, match="lr"):
        other.load_state(tmp_path)
    fewer = dataclasses.replace(p, train_dicts=p.train_dicts[:-1], model=copy.deepcopy(p.model))
    with pytest.raises(UserError, match="data order"):
        fewer.load_state(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        p.load_state(tmp_path)
