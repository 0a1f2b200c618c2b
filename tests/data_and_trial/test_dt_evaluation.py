"""Evaluation: COCO AP of ground truth fed back is 100; our matching metrics vs a numpy reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from models.data import DOMAINS, encode_mask, synthetic_dataset_dicts
from models.evaluation import evaluate_results, instances_to_results


def _gt_as_results(dicts: list[dict[str, Any]], score: float = 1.0) -> list[dict[str, Any]]:
    return [
        {
            "image_id": d["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": score,
        }
        for d in dicts
        for a in d["annotations"]
    ]


@pytest.mark.parametrize("domain", ["clutter", "xray"])
def test_ground_truth_fed_back_scores_ap_100(domain: str) -> None:
    dicts = synthetic_dataset_dicts(domain, 0, 6)
    res = evaluate_results(dicts, _gt_as_results(dicts, 0.9), DOMAINS[domain].classes)
    assert (
        res.ap == pytest.approx(100.0)
        and res.ap50 == pytest.approx(100.0)
        and res.ap75 == pytest.approx(100.0)
    )
    assert res.ap_s == pytest.approx(100.0)
    assert res.missed_rate == 0.0
    assert res.tp_confidence == pytest.approx(0.9)
    assert res.small_recall == 1.0
    assert res.num_gt == res.num_predictions == sum(len(d["annotations"]) for d in dicts)


def test_missing_and_wrong_predictions_are_counted() -> None:
    dicts = synthetic_dataset_dicts("clutter", 1, 5)
    gt = _gt_as_results(dicts)
    n = len(gt)
    half = evaluate_results(dicts, gt[::2], DOMAINS["clutter"].classes)
    assert half.missed_rate == pytest.approx(1 - len(gt[::2]) / n)
    assert half.ap < 60.0
    wrong = [dict(r, category_id=(r["category_id"] + 1) % 4) for r in gt]
    res = evaluate_results(dicts, wrong, DOMAINS["clutter"].classes)
    assert res.missed_rate == 1.0 and math.isnan(res.tp_confidence) and res.ap == 0.0
    low = evaluate_results(dicts, _gt_as_results(dicts, 0.3), DOMAINS["clutter"].classes, score_threshold=0.5)
    assert low.missed_rate == 1.0 and low.ap == pytest.approx(100.0)  # AP ignores the threshold
    empty = evaluate_results(dicts, [], DOMAINS["clutter"].classes)
    assert empty.ap == 0.0 and empty.missed_rate == 1.0
    assert empty.ap_s == 0.0 and math.isnan(empty.ap_l)  # no large GT: NaN, as COCOeval says


def _reference_matching(dicts, results, thr, iou_thr, small_area):
    """Independent numpy version: dense masks, IoU by pixel counting, greedy by score."""

    def dense(seg, h, w):
        rle = dict(seg, counts=seg["counts"].encode()) if isinstance(seg["counts"], str) else seg
        return mask_utils.decode(rle).astype(bool)

    n_gt = matched = small_n = small_m = 0
    tp = []
    for d in dicts:
        h, w = d["height"], d["width"]
        gts = [(a["category_id"], dense(a["segmentation"], h, w)) for a in d["annotations"]]
        preds = sorted(
            (r for r in results if r["image_id"] == d["image_id"] and r["score"] >= thr),
            key=lambda r: -r["score"],
        )
        used = [False] * len(gts)
        for p in preds:
            pm = dense(p["segmentation"], h, w)
            best, best_j = -1.0, -1
            for j, (c, gm) in enumerate(gts):
                if used[j] or c != p["category_id"]:
                    continue
                iou = (pm & gm).sum() / max((pm | gm).sum(), 1)
                if iou > best:
                    best, best_j = iou, j
            if best_j >= 0 and best >= iou_thr:
                used[best_j] = True
                tp.append(p["score"])
        for j, (_, gm) in enumerate(gts):
            n_gt += 1
            matched += used[j]
            if gm.sum() < small_area:
                small_n += 1
                small_m += used[j]
    return (n_gt - matched) / n_gt, float(np.mean(tp)), small_m / small_n


def test_matching_metrics_agree_with_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    dicts = synthetic_dataset_dicts("xray", 2, 5)
    results = []
    for r in _gt_as_results(dicts):
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        m = mask_utils.decode(rle).astype(bool)
        op = rng.integers(0, 4)  # perturb: keep, dilate, erode twice, shift
        if op == 1:
            m = ndimage.binary_dilation(m, iterations=2)
        elif op == 2:
            m = ndimage.binary_erosion(m, iterations=2)
        elif op == 3:
            m = np.roll(m, 4, axis=1)
        if m.any():
            results.append(dict(r, segmentation=encode_mask(m), score=float(rng.uniform(0.2, 1.0))))
        # plus a spurious duplicate competing for the same object
        if rng.uniform() < 0.3:
            results.append(dict(r, score=float(rng.uniform(0.2, 1.0))))
    res = evaluate_results(dicts, results, DOMAINS["xray"].classes, score_threshold=0.4, small_area=150)
    missed, tpc, small = _reference_matching(dicts, results, 0.4, 0.5, 150)
    assert 0 < res.missed_rate < 1
    assert res.missed_rate == pytest.approx(missed)
    assert res.tp_confidence == pytest.approx(tpc)
    assert res.small_recall == pytest.approx(small)


def test_instances_to_results_roundtrip() -> None:
    import torch
    from detectron2.structures import Instances

    dicts = synthetic_dataset_dicts("source", 0, 1)
    h, w = dicts[0]["height"], dicts[0]["width"]
    masks = []
    for a in dicts[0]["annotations"]:
        seg = a["segmentation"]
        masks.append(mask_utils.decode(dict(seg, counts=seg["counts"].encode())).astype(bool))
    inst = Instances((h, w))
    inst.pred_masks = torch.from_numpy(np.stack(masks))
    inst.scores = torch.full((len(masks),), 0.8)
    inst.pred_classes = torch.tensor([a["category_id"] for a in dicts[0]["annotations"]])
    results = instances_to_results(inst, dicts[0]["image_id"])
    res = evaluate_results(dicts, results, DOMAINS["source"].classes)
    assert res.ap == pytest.approx(100.0) and res.missed_rate == 0.0
