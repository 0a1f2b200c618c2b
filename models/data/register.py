"""Dataset registration through detectron2's DatasetCatalog / MetadataCatalog.

Names: synthetic splits are ``peftsweep_<domain>_<split>_s<seed>_n<num>_<size>`` (registered
lazily, generated on the fly when DatasetCatalog.get is called); COCO files are registered with
``register_coco_instances`` under the name the caller gives. Metadata always carries
``thing_classes`` (and, for COCO files, ``thing_dataset_id_to_contiguous_id``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from models.data.coco import synthetic_dataset_dicts
from models.data.synthetic import domain_spec
from models.errors import UserError

__all__ = ["SPLIT_OFFSETS", "register_synthetic", "register_coco", "get_dataset_dicts", "get_class_names"]

# Disjoint image index ranges per split, so train/val/test never share an image for one seed.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}


@functools.lru_cache(maxsize=4)
def _synthetic_cached(
    domain: str, seed: int, num_images: int, image_size: int, offset: int
) -> tuple[Any, ...]:
    # Generation costs ~10 ms per image: a process running several trials generates each split once.
    # A tuple, so the cached object cannot be appended to; the dicts are treated as read-only.
    return tuple(synthetic_dataset_dicts(domain, seed, num_images, image_size, offset=offset))


def register_synthetic(domain: str, split: str, seed: int, num_images: int, image_size: int = 128) -> str:
    """Register one split of a synthetic domain (idempotent); return its DatasetCatalog name."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    spec = domain_spec(domain)
    if split not in SPLIT_OFFSETS:
        raise UserError(f"split: must be one of {', '.join(SPLIT_OFFSETS)}, got {split!r}")
    if num_images < 1:
        raise UserError(f"num_images: must be >= 1, got {num_images}")
    name = f"peftsweep_{domain}_{split}_s{seed}_n{num_images}_{image_size}"
    if name not in DatasetCatalog.list():
        offset = SPLIT_OFFSETS[split]
        DatasetCatalog.register(
            name, lambda: list(_synthetic_cached(domain, seed, num_images, image_size, offset))
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(spec.classes), evaluator_type="coco", domain=domain, image_size=image_size
        )
    return name


def register_coco(name: str, json_file: str | Path, image_root: str | Path) -> str:
    """Register a COCO json + image folder with detectron2's ``register_coco_instances`` (idempotent)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    json_file, image_root = Path(json_file), Path(image_root)
    if not json_file.is_file():
        raise UserError(f"json_file: not found: {json_file}")
    if not image_root.is_dir():
        raise UserError(f"image_root: not a directory: {image_root}")
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(json_file), str(image_root))
    return name


def get_dataset_dicts(name: str, drop_empty: bool = False) -> list[dict[str, Any]]:
    """The dataset dicts of a registered dataset (optionally without images that have no annotation).

    For COCO files this also fills the metadata (``thing_classes``) as a side effect of loading.
    """
    from detectron2.data import DatasetCatalog

    dicts: list[dict[str, Any]] = DatasetCatalog.get(name)
    if drop_empty:
        dicts = [d for d in dicts if d.get("annotations")]
    if not dicts:
        raise UserError(f"dataset {name!r}: no images" + (" with annotations" if drop_empty else ""))
    return dicts


def get_class_names(name: str) -> list[str]:
    """``thing_classes`` of a registered dataset (loads a COCO dataset once if needed)."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        get_dataset_dicts(name)
    return list(MetadataCatalog.get(name).thing_classes)
