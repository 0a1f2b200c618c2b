"""Instance-segmentation evaluation: COCO mask AP (pycocotools COCOeval) plus the failure modes the
paper warns about.

Metrics (all on masks):
- ``ap, ap50, ap75, ap_s, ap_m, ap_l``: COCOeval ``iouType="segm"`` summary, in percent (0-100).
  COCOeval's "-1" (no GT in an area range) becomes NaN.
- ``missed_rate``: share of ground-truth instances with no prediction of the same class, score >=
  ``score_threshold`` and mask IoU >= ``iou_threshold`` (greedy one-to-one matching by descending
  score, as COCO does).
- ``tp_confidence``: mean score of the predictions matched as true positives by that matching
  (NaN when there are none).
- ``small_recall``: recall of that matching restricted to small GT (area < ``small_area``,
  COCO's 32^2 by default; NaN when the set has no small object).

Category ids in dataset dicts and predictions are contiguous 0-based (detectron2 convention).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from models.data.coco import dataset_dicts_to_coco, encode_mask

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "EvalResult",
    "instances_to_results",
    "evaluate_results",
    "run_inference",
    "evaluate_model",
]


# Score threshold of the "deployed" detector for missed_rate / tp_confidence / small_recall.
# DETR-family scores (sigmoid class probability x mask quality) run low: the CPU demo base model
# scores its true positives ~0.2-0.35 and nothing above 0.5 (at 0.5 every object counts as
# missed, which says nothing). 0.2 keeps the metrics informative there; set it per trial.
DEFAULT_SCORE_THRESHOLD = 0.2


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation (see module docstring)."""

    ap: float
    ap50: float
    ap75: float
    ap_s: float
    ap_m: float
    ap_l: float
    missed_rate: float
    tp_confidence: float
    small_recall: float
    num_images: int
    num_gt: int
    num_predictions: int

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def instances_to_results(instances: Any, image_id: int) -> list[dict[str, Any]]:
    """detectron2 ``Instances`` (pred_masks (K,H,W) bool, scores, pred_classes) -> COCO result dicts.

    ``category_id`` stays 0-based here; :func:`evaluate_results` shifts ids for COCOeval.
    """
    if len(instances) == 0:
        return []
    masks = instances.pred_masks.detach().to("cpu").numpy().astype(bool)
    scores = instances.scores.detach().to("cpu").float().numpy()
    classes = instances.pred_classes.detach().to("cpu").numpy()
    return [
        {"image_id": int(image_id), "category_id": int(c), "segmentation": encode_mask(m), "score": float(s)}
        for m, s, c in zip(masks, scores, classes)
    ]


def _rle(seg: Any, h: int, w: int) -> Any:
    """Any COCO segmentation -> compressed RLE with bytes counts (what pycocotools' iou wants)."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    counts = seg["counts"]
    return {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _coco_summary(coco_gt: dict[str, Any], results: list[dict[str, Any]]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        # loadRes cannot take an empty list. Nothing predicted = AP 0, except for area ranges
        # without ground truth, which COCOeval reports as -1 (-> NaN) as well.
        areas = [a["area"] for a in coco_gt["annotations"] if not a.get("iscrowd", 0)]
        ranges = [(0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, math.inf)]
        present = [any(lo <= a < hi for a in areas) for lo, hi in ranges]
        return [0.0 if areas else math.nan] * 3 + [0.0 if p else math.nan for p in present]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) * 100.0 if v >= 0 else math.nan for v in ev.stats[:6]]


def evaluate_results(
    gt_dicts: Sequence[dict[str, Any]],
    results: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = 0.5,
    small_area: float = 32.0**2,
) -> EvalResult:
    """Evaluate COCO-style ``results`` (0-based category ids) against detectron2 dataset dicts."""
    coco_gt = dataset_dicts_to_coco(gt_dicts, class_names)
    shifted = [dict(r, category_id=int(r["category_id"]) + 1) for r in results]
    ap, ap50, ap75, ap_s, ap_m, ap_l = _coco_summary(coco_gt, shifted)

    sizes = {im["id"]: (im["height"], im["width"]) for im in coco_gt["images"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in shifted:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    gt_by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco_gt["annotations"]:
        if not a.get("iscrowd", 0):
            gt_by_image.setdefault(int(a["image_id"]), []).append(a)

    num_gt = matched_gt = small_gt = matched_small = 0
    tp_scores: list[float] = []
    for image_id, (h, w) in sizes.items():
        gts = gt_by_image.get(image_id, [])
        preds = [p for p in by_image.get(image_id, []) if p["score"] >= score_threshold]
        num_gt += len(gts)
        small = [a["area"] < small_area for a in gts]
        small_gt += sum(small)
        for cat in {a["category_id"] for a in gts}:
            g_idx = [i for i, a in enumerate(gts) if a["category_id"] == cat]
            p_cat = sorted((p for p in preds if p["category_id"] == cat), key=lambda p: -p["score"])
            if not p_cat:
                continue
            iou = np.asarray(
                mask_utils.iou(
                    [_rle(p["segmentation"], h, w) for p in p_cat],
                    [_rle(gts[i]["segmentation"], h, w) for i in g_idx],
                    [0] * len(g_idx),
                )
            ).reshape(len(p_cat), len(g_idx))
            taken = np.zeros(len(g_idx), dtype=bool)
            for pi, p in enumerate(p_cat):
                cand = np.where(~taken, iou[pi], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= iou_threshold:
                    taken[j] = True
                    tp_scores.append(float(p["score"]))
                    matched_gt += 1
                    matched_small += int(small[g_idx[j]])
    return EvalResult(
        ap=ap,
        ap50=ap50,
        ap75=ap75,
        ap_s=ap_s,
        ap_m=ap_m,
        ap_l=ap_l,
        missed_rate=(num_gt - matched_gt) / num_gt if num_gt else math.nan,
        tp_confidence=float(np.mean(tp_scores)) if tp_scores else math.nan,
        small_recall=matched_small / small_gt if small_gt else math.nan,
        num_images=len(sizes),
        num_gt=num_gt,
        num_predictions=len(results),
    )


def run_inference(
    model: Any, dicts: Sequence[dict[str, Any]], mapper: Any, batch_size: int = 4, device: Any = None
) -> list[dict[str, Any]]:
    """Run ``model`` (eval mode, inference_mode) over dataset dicts; return COCO result dicts.

    The model returns predictions at each input's original ``height``/``width`` (meta-arch
    contract), so results compare directly with the dataset's annotations.
    """
    import torch

    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(dicts), batch_size):
                chunk = dicts[start : start + batch_size]
                inputs = [mapper(d) for d in chunk]
                if device is not None:
                    for x in inputs:
                        x["image"] = x["image"].to(device)
                outputs = model(inputs)
                for d, out in zip(chunk, outputs):
                    results.extend(instances_to_results(out["instances"].to("cpu"), d["image_id"]))
    finally:
        model.train(was_training)
    return results


def evaluate_model(
    model: Any,
    dicts: Sequence[dict[str, Any]],
    mapper: Any,
    class_names: Sequence[str],
    *,
    batch_size: int = 4,
    device: Any = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> EvalResult:
    """:func:`run_inference` then :func:`evaluate_results`."""
    results = run_inference(model, dicts, mapper, batch_size=batch_size, device=device)
    return evaluate_results(dicts, results, class_names, score_threshold=score_threshold)
