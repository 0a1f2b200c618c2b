"""Feature extraction for the domain shift: normalisation, pooling, level order, image loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.data.coco import write_synthetic_coco
from models.data.synthetic import generate_sample
from models.errors import UserError
from search.selection.shift import load_coco_images, pooled_backbone_features


class _Backbone(nn.Module):
    """res2 = the normalised image; res3 = its 2x average-pooled square (a non-linear level)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"res3": F.avg_pool2d(x, 2) ** 2, "res2": x}


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Backbone()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.register_buffer("pixel_mean", torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([2.0, 4.0, 5.0]).view(3, 1, 1), False)


def test_pooled_features_match_manual_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 16, 16), generator=gen, dtype=torch.uint8) for _ in range(5)]
    model = _Model().train()
    feats, levels = pooled_backbone_features(model, images, image_size=None, batch_size=2)
    assert levels == ("res2", "res3")  # sorted, whatever order the backbone returns
    assert model.training  # mode restored
    mean = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1)
    std = torch.tensor([2.0, 4.0, 5.0]).view(3, 1, 1)
    for i, img in enumerate(images):
        x = (img.double() - mean.double()) / std.double()
        expect = torch.cat([x.mean((1, 2)), (F.avg_pool2d(x[None], 2)[0] ** 2).mean((1, 2))])
        np.testing.assert_allclose(feats[i], expect.numpy(), rtol=1e-5, atol=1e-5)
    only, lv = pooled_backbone_features(model, images, image_size=None, levels=["res3"])
    assert lv == ("res3",)
    np.testing.assert_allclose(only, feats[:, 3:], rtol=1e-6)
    # Resizing: a constant image stays constant, so its pooled res2 is the normalised constant.
    const = [torch.full((3, 20, 12), 50, dtype=torch.uint8)]
    f, _ = pooled_backbone_features(model, const, image_size=8)
    np.testing.assert_allclose(f[0, :3], [(50 - 10) / 2, (50 - 20) / 4, (50 - 30) / 5], rtol=1e-6)
    with pytest.raises(UserError, match="levels"):
        pooled_backbone_features(model, images, levels=["res9"])
    with pytest.raises(UserError, match="no images"):
        pooled_backbone_features(model, [])


def test_load_coco_images_round_trip(tmp_path: Path) -> None:
    path = write_synthetic_coco("street", tmp_path / "s", 3, seed=5, image_size=48)
    imgs = list(load_coco_images(path, path.parent / "images"))
    assert len(imgs) == 3 and imgs[0].dtype == torch.uint8 and imgs[0].shape == (3, 48, 48)
    # The json's first image is synthetic sample 0 of that seed.
    expect = torch.from_numpy(generate_sample("street", 5, 0, 48).image).permute(2, 0, 1)
    assert torch.equal(imgs[0], expect)
    bgr = next(iter(load_coco_images(path, path.parent / "images", limit=1, input_format="BGR")))
    assert torch.equal(bgr, expect.flip(0))
    assert len(list(load_coco_images(path, path.parent / "images", limit=2))) == 2
    coco = json.loads(path.read_text())
    coco["images"][1]["file_name"] = "missing.png"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(UserError, match="missing.png"):
        list(load_coco_images(bad, path.parent / "images"))
    bad.write_text("{")
    with pytest.raises(UserError, match="bad.json"):
        list(load_coco_images(bad, path.parent / "images"))
