"""Real instance-segmentation data: the stardist nuclei image + label image -> COCO.

``cluster/install.sh`` extracts ``img2d.tif`` (512x512 fluorescence, uint16) and ``mask2d.tif``
(uint16 label image, 0 = background, one id per nucleus; 125 nuclei) from the stardist wheel
(BSD-3, 2018 Data Science Bowl) into ``<venv>/share/peftsweep/stardist``. Conversion is ours:
each label id becomes one annotation with an RLE mask, its tight box and pixel area.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.data.coco import atomic_write_json, atomic_write_png, encode_mask
from models.errors import UserError

__all__ = ["stardist_dir", "load_stardist", "labels_to_coco", "write_stardist_coco"]


def stardist_dir() -> Path:
    """Where install.sh puts the two files: ``Path(sys.prefix)/share/peftsweep/stardist``."""
    return Path(sys.prefix) / "share" / "peftsweep" / "stardist"


def _read_tif(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: not found (run cluster/install.sh, it extracts it from the stardist wheel)")
    with Image.open(path) as im:  # PIL reads the 16-bit single-page TIFFs ("I;16") directly
        return np.array(im)


def load_stardist(directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 RGB, labels (H, W) int) from ``img2d.tif`` / ``mask2d.tif``.

    The 16-bit intensity is min-max scaled to uint8 and repeated to 3 channels, the input format
    of our models.
    """
    d = Path(directory) if directory is not None else stardist_dir()
    raw = _read_tif(d / "img2d.tif").astype(np.float64)
    labels = _read_tif(d / "mask2d.tif").astype(np.int64)
    if raw.shape != labels.shape:
        raise UserError(f"{d}: image {raw.shape} and mask {labels.shape} differ in size")
    lo, hi = float(raw.min()), float(raw.max())
    gray = np.rint((raw - lo) / max(hi - lo, 1e-9) * 255.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2), labels


def labels_to_coco(
    labels: np.ndarray, *, image_id: int = 1, file_name: str = "img2d.png", category_name: str = "nucleus"
) -> dict[str, Any]:
    """COCO json of one label image: one annotation (RLE, bbox XYWH, area) per non-zero label id."""
    h, w = labels.shape
    annotations = []
    for ann_id, lab in enumerate(int(v) for v in np.unique(labels) if v != 0):
        mask = labels == lab
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        annotations.append(
            {
                "id": ann_id + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": encode_mask(mask),
                "bbox": [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "label": lab,  # the source label id, for traceability
            }
        )
    return {
        "images": [{"id": image_id, "file_name": file_name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": category_name}],
    }


def write_stardist_coco(out_dir: str | Path, directory: str | Path | None = None) -> Path:
    """Write ``out_dir/images/img2d.png`` + ``out_dir/annotations.json``; return the json path."""
    out = Path(out_dir)
    image, labels = load_stardist(directory)
    atomic_write_png(out / "images" / "img2d.png", image)
    path = out / "annotations.json"
    atomic_write_json(path, labels_to_coco(labels))
    return path
