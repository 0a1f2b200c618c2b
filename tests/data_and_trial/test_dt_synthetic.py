"""Synthetic domain suite: determinism, per-domain character, COCO round trip, mapper contract."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import (
    DOMAINS,
    InstanceMapper,
    build_augmentations,
    check_coco_dataset,
    generate_sample,
    generate_samples,
    get_class_names,
    get_dataset_dicts,
    register_coco,
    register_synthetic,
    synthetic_dataset_dicts,
    write_synthetic_coco,
)
from models.errors import UserError


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_same_seed_same_images_and_annotations(domain: str) -> None:
    a = generate_samples(domain, 7, range(3))
    b = generate_samples(domain, 7, range(3))
    for sa, sb in zip(a, b):
        assert np.array_equal(sa.image, sb.image)
        assert [i.category for i in sa.instances] == [i.category for i in sb.instances]
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(sa.instances, sb.instances))
    # Any single index regenerates alone, identically (generated on the fly, no shared stream).
    assert np.array_equal(generate_sample(domain, 7, 2).image, a[2].image)
    # Another seed gives other images.
    assert not np.array_equal(generate_sample(domain, 8, 0).image, a[0].image)
    # Dataset dicts (RLE annotations) are deterministic too.
    da, db = synthetic_dataset_dicts(domain, 7, 2), synthetic_dataset_dicts(domain, 7, 2)
    assert [d["annotations"] for d in da] == [d["annotations"] for d in db]


def _stats(domain: str, n: int = 24) -> dict[str, float]:
    samples = generate_samples(domain, 0, range(n))
    areas = [int(i.mask.sum()) for s in samples for i in s.instances]
    overlap = 0
    for s in samples:
        if len(s.instances) > 1:
            stack = np.stack([i.mask for i in s.instances])
            overlap += int((stack.sum(0) > 1).sum())
    return {
        "objects": len(areas) / n,
        "mean_area": float(np.mean(areas)),
        "overlap_px": overlap,
        "classes": len({i.category for s in samples for i in s.instances}),
    }


def test_domains_follow_the_difficulty_gradient() -> None:
    st = {d: _stats(d) for d in DOMAINS}
    # clean: few, large objects, one class.
    assert st["clean"]["objects"] <= 2 and st["clean"]["classes"] == 1
    assert st["clean"]["mean_area"] > 2 * st["source"]["mean_area"]
    # clutter: many objects per image, all 4 classes.
    assert st["clutter"]["objects"] > 2 * st["source"]["objects"] and st["clutter"]["classes"] == 4
    # xray: small objects whose masks overlap (additive attenuation: both stay visible).
    assert st["xray"]["mean_area"] < 0.5 * st["source"]["mean_area"]
    assert st["xray"]["overlap_px"] > 0
    # Modal masks elsewhere: no pixel belongs to two instances.
    for d in ("source", "street", "clean", "clutter"):
        assert st[d]["overlap_px"] == 0, d

    # street keeps the source's colour statistics (the mild shift); clutter's texture is strong.
    def images(d: str) -> np.ndarray:
        return np.stack([s.image for s in generate_samples(d, 0, range(24))]).astype(np.float64)

    src, street, clutter = images("source"), images("street"), images("clutter")
    assert np.abs(src.mean((0, 1, 2)) - street.mean((0, 1, 2))).max() < 10

    def grad(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=2)).mean())

    assert grad(clutter) > 3 * grad(src) and grad(street) < 1.5 * grad(src)
    # xray is grayscale.
    img = generate_sample("xray", 0, 0).image
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    # Every instance has a valid class id and a non-empty mask of the image size.
    for d, spec in DOMAINS.items():
        for s in generate_samples(d, 1, range(4)):
            assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
            for inst in s.instances:
                assert 0 <= inst.category < len(spec.classes)
                assert inst.mask.shape == (128, 128) and inst.mask.any()


def test_unknown_domain_is_a_user_error() -> None:
    with pytest.raises(UserError, match="domain"):
        generate_sample("nope", 0, 0)


def test_written_coco_reads_back_identically(tmp_path) -> None:
    path = write_synthetic_coco("clutter", tmp_path, 4, seed=3)
    report = check_coco_dataset(path, tmp_path / "images")
    assert report.images == 4 and report.warning_count == 0
    assert report.classes == list(DOMAINS["clutter"].classes)
    name = register_coco("t_clutter_rt", path, tmp_path / "images")
    dicts = get_dataset_dicts(name)
    assert get_class_names(name) == list(DOMAINS["clutter"].classes)
    originals = generate_samples("clutter", 3, range(4))
    assert report.instances == sum(len(s.instances) for s in originals)
    for d, s in zip(sorted(dicts, key=lambda d: d["image_id"]), originals):
        mapper = InstanceMapper(False, build_augmentations(False, 128), keep_annotations_in_eval=True)
        out = mapper(d)  # reads the PNG from disk
        assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), s.image)
        got = out["instances"].gt_masks.tensor.numpy()
        assert got.shape[0] == len(s.instances)
        for m, inst in zip(got, s.instances):
            assert np.array_equal(m, inst.mask)
        assert out["instances"].gt_classes.tolist() == [i.category for i in s.instances]


def test_mapper_output_contract_and_augmentations() -> None:
    name = register_synthetic("source", "train", 0, 6)
    dicts = get_dataset_dicts(name)
    assert register_synthetic("source", "train", 0, 6) == name  # idempotent
    val = get_dataset_dicts(register_synthetic("source", "val", 0, 6))
    assert not any(np.array_equal(a["image"], b["image"]) for a in dicts for b in val)  # disjoint splits

    out = InstanceMapper(True, build_augmentations(True, 96, flip=False))(dicts[0])
    assert out["image"].dtype.is_floating_point is False and tuple(out["image"].shape) == (3, 96, 96)
    assert (out["height"], out["width"]) == (128, 128)  # original size, for predictions
    inst = out["instances"]
    assert inst.gt_masks.tensor.dtype.is_floating_point is False and inst.gt_masks.tensor.shape[1:] == (
        96,
        96,
    )
    boxes = inst.gt_boxes.tensor
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()
    assert "annotations" in dicts[0] and "instances" not in dicts[0]  # input not mutated

    # Horizontal flip mirrors image and masks.
    import detectron2.data.transforms as T

    flipped = InstanceMapper(True, [T.RandomFlip(prob=1.0)])(dicts[0])
    plain = InstanceMapper(True, [])(dicts[0])
    assert np.array_equal(flipped["image"].numpy(), plain["image"].numpy()[:, :, ::-1])
    assert np.array_equal(
        flipped["instances"].gt_masks.tensor.numpy(), plain["instances"].gt_masks.tensor.numpy()[:, :, ::-1]
    )

    # Large-scale jitter at scale 0.5: image pasted on a zero canvas; padding is not object.
    lsj = InstanceMapper(True, build_augmentations(True, 128, lsj=True, lsj_scale=(0.5, 0.5), flip=False))(
        dicts[0]
    )
    assert tuple(lsj["image"].shape) == (3, 128, 128)
    assert (
        not lsj["instances"].gt_masks.tensor[:, 64:, :].any()
        and not lsj["instances"].gt_masks.tensor[:, :, 64:].any()
    )
    assert (lsj["image"][:, 64:, :] == 0).all()
