"""A trial's device and data: synthetic domains or COCO files through detectron2's DatasetCatalog."""

from __future__ import annotations

from typing import Any

from models.errors import UserError
from models.trial.spec import TrialSpec

__all__ = ["resolve_device", "load_trial_data"]


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trial spec: device {name!r} requested but CUDA is not available")
    return dev


def load_trial_data(spec: TrialSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(train dicts, eval dicts, class names) through detectron2's DatasetCatalog."""
    from models.data.register import get_class_names, get_dataset_dicts, register_coco, register_synthetic

    if spec.train_json is None:
        train_syn = register_synthetic(
            spec.domain, "train", spec.seed, spec.num_train_images, spec.image_size
        )
        val_syn = register_synthetic(spec.domain, "val", spec.seed, spec.num_eval_images, spec.image_size)
        return (
            get_dataset_dicts(train_syn, drop_empty=True),
            get_dataset_dicts(val_syn),
            get_class_names(train_syn),
        )
    import hashlib

    assert spec.train_images is not None
    key = hashlib.sha1(f"{spec.train_json}|{spec.train_images}".encode()).hexdigest()[:10]
    train_name = register_coco(f"peftsweep_coco_{key}", spec.train_json, spec.train_images)
    train_all = get_dataset_dicts(train_name, drop_empty=False)
    classes = get_class_names(train_name)
    if spec.eval_json is not None:
        assert spec.eval_images is not None
        key = hashlib.sha1(f"{spec.eval_json}|{spec.eval_images}".encode()).hexdigest()[:10]
        eval_name = register_coco(f"peftsweep_coco_{key}", spec.eval_json, spec.eval_images)
        eval_dicts = get_dataset_dicts(eval_name)[: spec.num_eval_images]
        if get_class_names(eval_name) != classes:
            raise UserError(f"{spec.eval_json}: categories differ from {spec.train_json}")
        train: list[dict[str, Any]] = train_all
    else:
        if len(train_all) < 2:
            raise UserError(f"{spec.train_json}: need >= 2 images to hold some out for evaluation")
        n_eval = min(spec.num_eval_images, len(train_all) // 2)
        train, eval_dicts = train_all[:-n_eval], train_all[-n_eval:]
    train = [d for d in train if d.get("annotations")][: spec.num_train_images]
    if not train:
        raise UserError(f"{spec.train_json}: no training image with annotations")
    return train, eval_dicts, classes
