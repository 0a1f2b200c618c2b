"""COCO instance-segmentation json: build, write (atomically), load, and convert to detectron2 dicts.

Masks are stored as compressed RLE (``{"size": [h, w], "counts": str}``) by default: exact for
any mask, including ones with holes, which polygons are not. Polygons are accepted on input.
Category ids in the json are 1-based as in COCO; detectron2 dataset dicts use contiguous 0-based
ids (what ``register_coco_instances`` produces), with the mapping kept in the metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from models.data.synthetic import SyntheticSample, domain_spec, generate_sample

__all__ = [
    "atomic_write_json",
    "atomic_write_png",
    "encode_mask",
    "mask_to_annotation",
    "samples_to_dataset_dicts",
    "synthetic_dataset_dicts",
    "dataset_dicts_to_coco",
    "write_synthetic_coco",
]


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as json to ``path`` through a temp file + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an (H, W[, 3]) uint8 array as PNG via temp file + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO compressed RLE with ``counts`` as str (json-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def mask_to_annotation(mask: np.ndarray, category_id: int) -> dict[str, Any]:
    """A detectron2-style annotation (bbox XYWH_ABS, RLE segmentation, area) for one mask."""
    from detectron2.structures import BoxMode

    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "bbox_mode": BoxMode.XYWH_ABS,
        "segmentation": encode_mask(mask),
        "area": float(mask.sum()),
        "category_id": int(category_id),
        "iscrowd": 0,
    }


def samples_to_dataset_dicts(
    samples: Sequence[SyntheticSample], *, first_image_id: int = 1, name: str = "synthetic"
) -> list[dict[str, Any]]:
    """detectron2 dataset dicts (contiguous 0-based ``category_id``) with the image kept in memory.

    Each dict carries ``"image"`` ((H, W, 3) uint8 RGB) instead of reading ``file_name`` from disk;
    :class:`models.data.mapper.InstanceMapper` accepts either.
    """
    out = []
    for k, s in enumerate(samples):
        h, w = s.image.shape[:2]
        image_id = first_image_id + k
        out.append(
            {
                "file_name": f"{name}/{image_id:06d}.png",
                "image_id": image_id,
                "height": h,
                "width": w,
                "image": s.image,
                "annotations": [mask_to_annotation(i.mask, i.category) for i in s.instances],
            }
        )
    return out


def synthetic_dataset_dicts(
    domain: str, seed: int, num_images: int, image_size: int = 128, offset: int = 0
) -> list[dict[str, Any]]:
    """Dataset dicts of images ``offset .. offset+num_images-1`` of a synthetic domain."""
    samples = [generate_sample(domain, seed, offset + i, image_size) for i in range(num_images)]
    return samples_to_dataset_dicts(samples, first_image_id=offset + 1, name=domain)


def dataset_dicts_to_coco(dicts: Iterable[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO json (1-based category ids, RLE segmentation, file_name relative) from dataset dicts."""
    from detectron2.structures import BoxMode

    images, annotations = [], []
    ann_id = 1
    for d in dicts:
        images.append(
            {
                "id": int(d["image_id"]),
                "file_name": Path(d["file_name"]).name,
                "height": d["height"],
                "width": d["width"],
            }
        )
        for a in d.get("annotations", []):
            bbox = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYWH_ABS)
            seg = a["segmentation"]
            area = a.get("area")
            if area is None:
                area = float(mask_utils.area(_as_rle(seg, d["height"], d["width"])))
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": int(d["image_id"]),
                    "category_id": int(a["category_id"]) + 1,
                    "bbox": [float(v) for v in bbox],
                    "segmentation": seg,
                    "area": float(area),
                    "iscrowd": int(a.get("iscrowd", 0)),
                }
            )
            ann_id += 1
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _as_rle(seg: Any, h: int, w: int) -> Any:
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def write_synthetic_coco(
    domain: str, out_dir: str | os.PathLike[str], num_images: int, seed: int = 0, image_size: int = 128
) -> Path:
    """Write ``num_images`` of a synthetic domain as PNGs + ``annotations.json`` under ``out_dir``.

    Layout: ``out_dir/images/<id>.png`` and ``out_dir/annotations.json`` (file_name relative to
    ``images/``), so ``peftsweep data check --json out_dir/annotations.json --images
    out_dir/images`` and ``register_coco_instances`` read it back. Returns the json path.
    """
    out = Path(out_dir)
    dicts = synthetic_dataset_dicts(domain, seed, num_images, image_size)
    for d in dicts:
        atomic_write_png(out / "images" / Path(d["file_name"]).name, d["image"])
    coco = dataset_dicts_to_coco(dicts, domain_spec(domain).classes)
    coco["info"] = {"description": f"peftsweep synthetic domain {domain!r}", "seed": seed}
    path = out / "annotations.json"
    atomic_write_json(path, coco)
    return path
