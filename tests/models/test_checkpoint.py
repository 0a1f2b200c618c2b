"""Checkpoint loading/saving: round trip, class-count change, official formats, safe unpickling."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models import build_model
from models.checkpoint import check_base_checkpoint, load_checkpoint, read_state_dict, save_checkpoint
from models.errors import UserError

Sample = Callable[..., dict[str, Any]]
CLASS_KEYS = [
    "sem_seg_head.predictor.class_embed.weight",
    "sem_seg_head.predictor.class_embed.bias",
    "sem_seg_head.predictor.label_enc.weight",
]


def _tiny(num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("maskdino_tiny", num_classes=num_classes)


def test_round_trip_restores_weights_and_outputs(tmp_path: Path, make_sample: Sample) -> None:
    a, b = _tiny(seed=0), _tiny(seed=1)
    path = tmp_path / "ckpt" / "tiny.pth"
    save_checkpoint(a, path, {"model": "maskdino_tiny", "num_classes": 3, "tags": ["x"]})
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    raw = torch.load(path, weights_only=True)
    assert raw["meta"]["num_classes"] == 3
    # aliased keys are stored once (shared storage), as in the model
    pred = "sem_seg_head.predictor."
    assert (
        raw["model"][pred + "_bbox_embed.layers.0.weight"].data_ptr()
        == raw["model"][pred + "bbox_embed.1.layers.0.weight"].data_ptr()
    )

    report = load_checkpoint(b, path, num_classes=3)
    assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
    assert report.shape_mismatch == [] and len(report.loaded) == len(a.state_dict())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    a.eval()
    b.eval()
    with torch.no_grad():
        ia, ib = a([make_sample(0)])[0]["instances"], b([make_sample(0)])[0]["instances"]
    assert torch.equal(ia.scores, ib.scores) and torch.equal(ia.pred_masks, ib.pred_masks)


def test_class_count_change_reinitialises_only_class_modules(tmp_path: Path, make_sample: Sample) -> None:
    src = _tiny(num_classes=3, seed=0)
    with torch.no_grad():  # make the class tensors differ from any fresh initialisation
        for k in CLASS_KEYS:
            src.state_dict()[k].add_(1.0)
    path = tmp_path / "src.pth"
    save_checkpoint(src, path)
    dst = _tiny(num_classes=5, seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_checkpoint(dst, path)
    assert sorted(report.reinitialised) == sorted(CLASS_KEYS)
    assert report.checkpoint_num_classes == 3 and report.model_num_classes == 5
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert "re-initialised" in report.summary() and "3 -> 5" in report.summary()
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    for k, v in sd_dst.items():
        if k in CLASS_KEYS:
            assert v.shape[0] == 5
            assert not torch.isclose(v[:3], sd_src[k]).any(), f"{k} must not come from the checkpoint"
            if k.endswith("weight"):
                assert not torch.equal(v, before[k]), f"{k} must be freshly initialised"
        elif k == "criterion.empty_weight":
            assert v.shape == (6,)
        else:
            assert torch.equal(v, sd_src[k]), k
    dst.train()
    assert torch.isfinite(sum(dst([make_sample(0, num_classes=5)]).values()))


def test_requested_class_count_must_match_model(tmp_path: Path) -> None:
    model = _tiny()
    path = tmp_path / "m.pth"
    save_checkpoint(model, path)
    with pytest.raises(UserError, match="num_classes"):
        load_checkpoint(model, path, num_classes=7)


def test_detectron2_pkl_of_numpy_arrays(tmp_path: Path) -> None:
    model = _tiny()
    sd = model.state_dict()
    # a backbone-only model-zoo file: numpy arrays, keys without the "backbone." prefix
    backbone = {
        k.removeprefix("backbone."): v.numpy().copy() for k, v in sd.items() if k.startswith("backbone.")
    }
    backbone["fc.weight"] = np.zeros((2, 2), dtype=np.float32)
    path = tmp_path / "r.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": backbone, "__author__": "test", "matching_heuristics": True}, f)
    target = _tiny(seed=5)
    # a backbone-only file is not a base: strict loading names it and the first missing head keys
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError, match=r"r\.pkl: checkpoint does not fit .*missing \(sem_seg_head\."):
        load_checkpoint(target, path)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items()), "nothing loaded"
    report = load_checkpoint(target, path, strict=False)  # starting from ImageNet weights on purpose
    assert report.unexpected == ["backbone.fc.weight"]
    assert set(report.loaded) == {k for k in sd if k.startswith("backbone.")}
    assert report.missing and all(not k.startswith("backbone.") for k in report.missing)
    for k in report.loaded:
        assert torch.equal(target.state_dict()[k], sd[k]), k


def test_aliases_count_as_loaded(tmp_path: Path) -> None:
    model = _tiny()
    sd = model.state_dict()
    only_canonical = {k: v for k, v in sd.items() if ".bbox_embed." not in k}
    assert len(only_canonical) < len(sd)
    path = tmp_path / "c.pth"
    torch.save({"model": only_canonical}, path)
    report = load_checkpoint(_tiny(seed=3), path)
    assert report.missing == [] and len(report.loaded) == len(sd)


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned > /dev/null",))


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"a": _Evil()}}, f)
    with pytest.raises(UserError, match=r"evil\.pkl: cannot read weights \(refused by weights-only"):
        read_state_dict(pkl)
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"a": _Evil()}}, pth)
    with pytest.raises(UserError, match=r"evil\.pth: cannot read weights \(refused by weights-only.*posix"):
        read_state_dict(pth)


def test_bad_paths_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    other = tmp_path / "w.bin"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="w.bin"):
        read_state_dict(other)
    with pytest.raises(UserError, match="meta"):
        save_checkpoint(_tiny(), tmp_path / "x.pth", {"obj": object()})


def test_checkpoint_of_another_model_loads_nothing_and_names_file_and_keys(tmp_path: Path) -> None:
    """The silent '0 of 247 keys loaded' case: every key differs (a renamed prefix)."""
    model = _tiny()
    path = tmp_path / "other.pth"
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, path)
    target = _tiny(seed=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError) as err:
        load_checkpoint(target, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: checkpoint does not fit the model: 0 of 247 keys would load;")
    assert "\n" not in msg
    first = next(iter(model.state_dict()))
    assert f"missing ({first}, " in msg and f"unexpected (model.{first}, " in msg
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_shape_mismatch_beyond_the_class_head_is_an_error(tmp_path: Path) -> None:
    sd = _tiny().state_dict()
    key = "sem_seg_head.pixel_decoder.mask_features.weight"
    sd[key] = torch.ones(sd[key].numel() + 1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(UserError, match=rf"bad\.pth: .*1 shape mismatch \({re.escape(key)}: ckpt"):
        load_checkpoint(_tiny(seed=1), path)
    report = load_checkpoint(_tiny(seed=1), path, strict=False)
    assert not report.ok and [m.split(":")[0] for m in report.shape_mismatch] == [key]
    assert key not in report.loaded and len(report.loaded) == len(sd) - 1


def test_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    save_checkpoint(_tiny(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.pth: cannot read weights \(truncated or corrupt file\)$"):
        load_checkpoint(_tiny(), path)


def test_report_line_for_a_trial_row(tmp_path: Path) -> None:
    path = tmp_path / "src.pth"
    save_checkpoint(_tiny(num_classes=3), path)
    report = load_checkpoint(_tiny(num_classes=5), path)
    assert report.ok and report.error_line() == ""
    assert report.short() == (
        f"loaded {len(report.loaded)}/{report.model_keys}, reinitialised 3, missing 0, unexpected 0, "
        "shape mismatch 0, ignored 0 (classes 3 -> 5)"
    )
    assert len(report.loaded) + 3 + 1 == report.model_keys  # + the derived criterion.empty_weight


def test_base_checks_against_a_model_name_without_building_weights(tmp_path: Path) -> None:
    """What a sweep checks before it starts: the base fits the named model (on the meta device)."""
    path = tmp_path / "base.pth"
    save_checkpoint(_tiny(num_classes=4), path)
    report = check_base_checkpoint("maskdino_tiny", path)
    # the registered class count (80) differs: class head re-initialised, empty_weight derived
    assert report.ok and len(report.loaded) + len(report.reinitialised) + 1 == report.model_keys
    with pytest.raises(UserError, match=r"base\.pth: checkpoint does not fit the model seem_tiny: "):
        check_base_checkpoint("seem_tiny", path)
