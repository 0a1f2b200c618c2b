"""Validate a COCO instance-segmentation dataset before a sweep uses it.

:func:`check_coco_dataset` reads the json and every image it names and returns a
:class:`DatasetReport`: counts, class names, image size range, and every problem found, grouped
by kind. What makes the set unusable raises :class:`models.errors.UserError` (invalid json, a
missing top-level key, no images or no categories, an image or annotation entry without its
required keys, no readable image at all); problems a loader can skip (one bad image, one bad
annotation) are counted warnings with the offending ids.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from models.errors import UserError

__all__ = ["PROBLEM_KINDS", "DatasetReport", "check_coco_dataset"]

# Every skippable problem the check names (the keys of DatasetReport.problems).
PROBLEM_KINDS: dict[str, str] = {
    "missing_image_file": "image file not found",
    "unreadable_image": "image file cannot be decoded",
    "image_size_mismatch": "height/width in the json differ from the file",
    "duplicate_image_id": "image id used twice (later entries ignored)",
    "duplicate_annotation_id": "annotation id used twice",
    "annotation_unknown_image": "annotation names an image id that does not exist",
    "unknown_category_id": "annotation names a category id that does not exist",
    "polygon_too_few_points": "polygon with fewer than 3 points",
    "invalid_segmentation": "segmentation is neither polygons nor RLE of the image size",
    "missing_segmentation": "annotation has no segmentation (no mask to learn)",
    "empty_box": "bbox with width or height <= 0",
    "box_out_of_image": "bbox extends outside the image",
    "zero_area_mask": "mask with no pixels",
}
_MAX_EXAMPLES = 5


@dataclass
class DatasetReport:
    """Result of :func:`check_coco_dataset`. ``problems[kind]`` lists one message per occurrence."""

    json_path: str
    images: int = 0  # usable images (listed, unique, file present and readable)
    images_listed: int = 0
    instances: int = 0
    classes: list[str] = field(default_factory=list)
    min_size: tuple[int, int] | None = None  # (height, width) of the smallest image read
    max_size: tuple[int, int] | None = None
    instances_per_class: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def warning_count(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def add(self, kind: str, message: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.problems.setdefault(kind, []).append(message)

    def format(self) -> str:
        """Human-readable summary (what ``peftsweep data check`` prints)."""
        size = "n/a"
        if self.min_size and self.max_size:
            size = f"{self.min_size[0]}x{self.min_size[1]} .. {self.max_size[0]}x{self.max_size[1]} (HxW)"
        lines = [
            f"dataset: {self.json_path}",
            f"images: {self.images}"
            + (f" usable of {self.images_listed} listed" if self.images_listed != self.images else ""),
            f"instances: {self.instances}",
            f"classes: {len(self.classes)} ({', '.join(self.classes)})",
            "instances per class: " + ", ".join(f"{k}={v}" for k, v in self.instances_per_class.items()),
            f"image size range: {size}",
            f"warnings: {self.warning_count}",
        ]
        for kind, msgs in sorted(self.problems.items()):
            lines.append(f"  {kind}: {len(msgs)} ({PROBLEM_KINDS[kind]})")
            for m in msgs[:_MAX_EXAMPLES]:
                lines.append(f"    - {m}")
            if len(msgs) > _MAX_EXAMPLES:
                lines.append(f"    - ... {len(msgs) - _MAX_EXAMPLES} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "json_path": self.json_path,
            "images": self.images,
            "images_listed": self.images_listed,
            "instances": self.instances,
            "classes": list(self.classes),
            "min_size": self.min_size,
            "max_size": self.max_size,
            "instances_per_class": dict(self.instances_per_class),
            "warnings": {k: len(v) for k, v in self.problems.items()},
        }


def _require(entry: Any, keys: tuple[str, ...], where: str, path: Path) -> None:
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where} is not an object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise UserError(f"{path}: {where} lacks required key {missing[0]!r}")


def check_coco_dataset(
    json_path: str | Path, images_dir: str | Path, read_images: bool = True
) -> DatasetReport:
    """Check a COCO json + image folder; raise UserError if unusable, else return the report.

    ``file_name`` entries are resolved relative to ``images_dir``. With ``read_images`` every image
    is decoded (catches truncated files and size mismatches); otherwise only existence is checked.
    """
    path = Path(json_path)
    images_root = Path(images_dir)
    if not path.is_file():
        raise UserError(f"--json: file not found: {path}")
    if not images_root.is_dir():
        raise UserError(f"--images: not a directory: {images_root}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid json ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{path}: missing required key {key!r}")
        if not isinstance(data[key], list):
            raise UserError(f"{path}: {key!r} must be a list")
    if not data["images"]:
        raise UserError(f"{path}: no images")
    if not data["categories"]:
        raise UserError(f"{path}: no categories")

    report = DatasetReport(json_path=str(path))
    categories: dict[int, str] = {}
    for i, c in enumerate(data["categories"]):
        _require(c, ("id", "name"), f"categories[{i}]", path)
        if c["id"] in categories:
            raise UserError(f"{path}: category id {c['id']} defined twice")
        categories[int(c["id"])] = str(c["name"])
    report.classes = list(categories.values())

    sizes: dict[int, tuple[int, int]] = {}  # usable images: id -> (h, w)
    # Every image id met (usable or skipped): annotations of a skipped image are not reported a
    # second time as "unknown image".
    seen: set[Any] = set()
    for i, im in enumerate(data["images"]):
        _require(im, ("id", "file_name"), f"images[{i}]", path)
        iid = im["id"]
        if iid in seen:
            report.add("duplicate_image_id", f"image id {iid} ({im['file_name']})")
            continue
        seen.add(iid)
        file = images_root / str(im["file_name"])
        if not file.is_file():
            report.add("missing_image_file", f"image id {iid}: {file}")
            continue
        hw = (im.get("height"), im.get("width"))
        if read_images:
            try:
                with Image.open(file) as pil:
                    pil.load()
                    hw_file = (pil.height, pil.width)
            except Exception as exc:  # PIL raises many types for bad files
                report.add("unreadable_image", f"image id {iid}: {file} ({type(exc).__name__})")
                continue
            if hw[0] is not None and hw[1] is not None and (int(hw[0]), int(hw[1])) != hw_file:
                report.add(
                    "image_size_mismatch",
                    f"image id {iid}: json {hw[0]}x{hw[1]}, file {hw_file[0]}x{hw_file[1]}",
                )
            hw = hw_file
        if hw[0] is None or hw[1] is None:
            raise UserError(f"{path}: images[{i}] lacks 'height'/'width' (and the file was not read)")
        sizes[iid] = (int(hw[0]), int(hw[1]))
    if not sizes:
        raise UserError(f"{path}: none of the {len(data['images'])} images can be read from {images_root}")
    report.images = len(sizes)
    report.images_listed = len(data["images"])
    report.min_size = min(sizes.values(), key=lambda s: s[0] * s[1])
    report.max_size = max(sizes.values(), key=lambda s: s[0] * s[1])

    per_class: Counter[str] = Counter()
    ann_ids: set[Any] = set()
    for i, a in enumerate(data["annotations"]):
        _require(a, ("image_id", "category_id"), f"annotations[{i}]", path)
        aid = a.get("id", f"#{i}")
        if "id" in a:
            if a["id"] in ann_ids:
                report.add("duplicate_annotation_id", f"annotation id {a['id']}")
                continue
            ann_ids.add(a["id"])
        if a["image_id"] not in sizes:
            if a["image_id"] not in seen:
                report.add("annotation_unknown_image", f"annotation {aid}: image id {a['image_id']}")
            continue  # annotations of a skipped image go with it
        if a["category_id"] not in categories:
            report.add("unknown_category_id", f"annotation {aid}: category id {a['category_id']}")
            continue
        h, w = sizes[a["image_id"]]
        if not _check_box(a, aid, h, w, report):
            continue
        if not _check_segmentation(a, aid, h, w, report):
            continue
        report.instances += 1
        per_class[categories[a["category_id"]]] += 1
    report.instances_per_class = {n: per_class.get(n, 0) for n in report.classes}
    return report


def _check_box(a: dict[str, Any], aid: Any, h: int, w: int, report: DatasetReport) -> bool:
    box = a.get("bbox")
    if box is None:
        return True  # detectron2 derives boxes from masks when absent
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
        report.add("empty_box", f"annotation {aid}: bbox {box!r} is not [x, y, w, h]")
        return False
    x, y, bw, bh = (float(v) for v in box)
    if bw <= 0 or bh <= 0:
        report.add("empty_box", f"annotation {aid}: bbox {box}")
        return False
    # One pixel of slack: COCO tools round boxes of masks touching the border.
    if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
        report.add("box_out_of_image", f"annotation {aid}: bbox {box} outside {w}x{h} (WxH)")
        return False
    return True


def _check_segmentation(a: dict[str, Any], aid: Any, h: int, w: int, report: DatasetReport) -> bool:
    seg = a.get("segmentation")
    if seg is None or seg == []:
        report.add("missing_segmentation", f"annotation {aid}")
        return False
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list)]
        if len(polys) != len(seg) or any(not all(isinstance(v, int | float) for v in p) for p in polys):
            report.add("invalid_segmentation", f"annotation {aid}: polygons must be lists of numbers")
            return False
        bad = [p for p in polys if len(p) < 6 or len(p) % 2]
        if bad:
            report.add("polygon_too_few_points", f"annotation {aid}: polygon with {len(bad[0]) // 2} points")
            return False
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [h, w]:
            report.add("invalid_segmentation", f"annotation {aid}: RLE size {seg['size']} != image {h}x{w}")
            return False
        try:
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            if isinstance(rle["counts"], str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            mask_utils.area(rle)
        except Exception as exc:  # malformed counts
            report.add("invalid_segmentation", f"annotation {aid}: bad RLE ({type(exc).__name__})")
            return False
    else:
        report.add("invalid_segmentation", f"annotation {aid}: {type(seg).__name__}")
        return False
    area = int(np.asarray(mask_utils.area(rle)).sum())
    if area == 0:
        report.add("zero_area_mask", f"annotation {aid}")
        return False
    return True
