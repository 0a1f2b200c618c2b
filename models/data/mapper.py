"""detectron2 DatasetMapper-style mapping of dataset dicts to model inputs, plus batching.

The same path serves real COCO data (``file_name`` read from disk) and synthetic data (the
image kept in memory under ``"image"``). Output per image, the contract of our meta-archs:
``{"image": (3, H, W) uint8 RGB tensor, "height", "width", "image_id", "instances": Instances}``
with ``gt_classes`` (K,) int64, ``gt_masks`` BitMasks, ``gt_boxes`` Boxes (xyxy, absolute).
``height``/``width`` are the ORIGINAL size (what predictions are returned at).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["build_augmentations", "InstanceMapper", "batch_iterator"]


def build_augmentations(
    is_train: bool,
    image_size: int,
    *,
    flip: bool = True,
    lsj: bool = False,
    lsj_scale: tuple[float, float] = (0.5, 1.5),
    max_size: int | None = None,
) -> list[Any]:
    """detectron2 augmentations: ResizeShortestEdge to ``image_size`` (+ RandomFlip in training).

    With ``lsj`` (large-scale jitter, as in Mask DINO's COCO recipe) training uses
    ResizeScale(lsj_scale) to a square ``image_size`` canvas then FixedSizeCrop with zero padding
    of image and masks (detectron2's default segmentation pad value 255 would mark padding as
    object, so it is set to 0 here).
    """
    import detectron2.data.transforms as T

    max_size = max_size or int(image_size * 1333 / 800)
    if is_train and lsj:
        augs: list[Any] = [
            T.ResizeScale(lsj_scale[0], lsj_scale[1], image_size, image_size),
            T.FixedSizeCrop((image_size, image_size), pad=True, pad_value=0.0, seg_pad_value=0),
        ]
    else:
        augs = [T.ResizeShortestEdge(image_size, max_size, "choice")]
    if is_train and flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    return augs


class InstanceMapper:
    """Callable: dataset dict -> model input dict (see module docstring). Never mutates its input.

    ``mask_format="bitmask"``: RLE and polygon annotations both become BitMasks after the
    geometric transforms. Annotations with ``iscrowd`` are dropped; instances whose box is
    empty after augmentation are filtered out.
    """

    def __init__(self, is_train: bool, augmentations: Sequence[Any], keep_annotations_in_eval: bool = False):
        import detectron2.data.transforms as T

        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.keep_annotations_in_eval = keep_annotations_in_eval

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        import detectron2.data.transforms as T
        import torch
        from detectron2.data import detection_utils as utils

        d = {k: v for k, v in dataset_dict.items() if k not in ("image", "annotations")}
        if "image" in dataset_dict:
            image = np.asarray(dataset_dict["image"])
        else:
            image = utils.read_image(dataset_dict["file_name"], format="RGB")
            utils.check_image_size(dataset_dict, image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        d.setdefault("height", image.shape[0])
        d.setdefault("width", image.shape[1])
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train and not self.keep_annotations_in_eval:
            return d
        annos = [
            utils.transform_instance_annotations(copy.deepcopy(a), transforms, image.shape[:2])
            for a in dataset_dict.get("annotations", [])
            if not a.get("iscrowd", 0)
        ]
        instances = utils.annotations_to_instances(annos, image.shape[:2], mask_format="bitmask")
        if len(instances):
            # Boxes from the transformed masks: tight even after crops, unlike transformed boxes.
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        d["instances"] = utils.filter_empty_instances(instances)
        return d


def batch_iterator(
    dicts: Sequence[dict[str, Any]],
    mapper: Callable[[dict[str, Any]], dict[str, Any]],
    batch_size: int,
    seed: int,
    skip: int = 0,
) -> Iterator[list[dict[str, Any]]]:
    """Endless training batches: a seeded reshuffle per epoch, each batch ``batch_size`` mapped dicts.

    Images that end up with no instance after augmentation are kept (the model sees background
    only); detectron2 drops them at load time, which :func:`models.data.register` also does for
    images with no annotations.

    ``skip`` batches are passed over without mapping them (resuming a run): the stream then
    continues exactly as the uninterrupted one would. Random augmentations draw from numpy's
    global RNG, which the caller restores for that part.
    """
    if not dicts:
        raise ValueError("batch_iterator: empty dataset")
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(skip * batch_size):
        if not order:
            order = rng.permutation(len(dicts)).tolist()
        order.pop()
    while True:
        batch = []
        for _ in range(batch_size):
            if not order:
                order = rng.permutation(len(dicts)).tolist()
            batch.append(mapper(dicts[order.pop()]))
        yield batch
