"""Datasets: synthetic domain suite, COCO json I/O, detectron2 registration + mapper, checks.

Heavy imports (detectron2, torch) stay inside functions so importing this package is cheap.
"""

from models.data.check import PROBLEM_KINDS, DatasetReport, check_coco_dataset
from models.data.coco import (
    dataset_dicts_to_coco,
    encode_mask,
    samples_to_dataset_dicts,
    synthetic_dataset_dicts,
    write_synthetic_coco,
)
from models.data.mapper import InstanceMapper, batch_iterator, build_augmentations
from models.data.register import (
    SPLIT_OFFSETS,
    get_class_names,
    get_dataset_dicts,
    register_coco,
    register_synthetic,
)
from models.data.stardist import labels_to_coco, load_stardist, stardist_dir, write_stardist_coco
from models.data.synthetic import DOMAINS, SHAPES, DomainSpec, domain_spec, generate_sample, generate_samples

__all__ = [
    "DOMAINS",
    "PROBLEM_KINDS",
    "SHAPES",
    "SPLIT_OFFSETS",
    "DatasetReport",
    "DomainSpec",
    "InstanceMapper",
    "batch_iterator",
    "build_augmentations",
    "check_coco_dataset",
    "dataset_dicts_to_coco",
    "domain_spec",
    "encode_mask",
    "generate_sample",
    "generate_samples",
    "get_class_names",
    "get_dataset_dicts",
    "labels_to_coco",
    "load_stardist",
    "register_coco",
    "register_synthetic",
    "samples_to_dataset_dicts",
    "stardist_dir",
    "synthetic_dataset_dicts",
    "write_stardist_coco",
    "write_synthetic_coco",
]
