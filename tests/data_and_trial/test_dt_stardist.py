"""Real data: the stardist nuclei image + labels (installed by cluster/install.sh) -> COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.data import (
    InstanceMapper,
    build_augmentations,
    check_coco_dataset,
    get_dataset_dicts,
    labels_to_coco,
    load_stardist,
    register_coco,
    stardist_dir,
    write_stardist_coco,
)
from models.errors import UserError

pytestmark = pytest.mark.skipif(
    not (stardist_dir() / "mask2d.tif").is_file(), reason="stardist sample not installed (cluster/install.sh)"
)


def test_125_nuclei_round_trip(tmp_path, cli) -> None:
    import tifffile  # dev dependency: an independent TIFF reader for the reference

    labels_ref = tifffile.imread(stardist_dir() / "mask2d.tif")
    image, labels = load_stardist()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert np.array_equal(labels, labels_ref)

    assert cli(["data", "stardist", "--out", str(tmp_path)]) == 0
    path = tmp_path / "annotations.json"
    data = json.loads(path.read_text())
    assert len(data["annotations"]) == 125
    # Every annotation decodes to exactly its label's pixels, and together they rebuild the label image.
    rebuilt = np.zeros_like(labels_ref)
    for a in data["annotations"]:
        seg = a["segmentation"]
        m = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        assert np.array_equal(m, labels_ref == a["label"])
        assert a["area"] == m.sum()
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        rebuilt[m] = a["label"]
    assert np.array_equal(rebuilt, labels_ref)

    report = check_coco_dataset(path, tmp_path / "images")
    assert (report.images, report.instances, report.warning_count) == (1, 125, 0)
    assert report.classes == ["nucleus"] and report.max_size == (512, 512)

    # The same detectron2 path as synthetic data: register, map (resize 256 + flip), 125 instances.
    dicts = get_dataset_dicts(register_coco("t_stardist", path, tmp_path / "images"))
    out = InstanceMapper(True, build_augmentations(True, 256))(dicts[0])
    assert tuple(out["image"].shape) == (3, 256, 256)
    assert len(out["instances"]) == 125


def test_labels_to_coco_skips_background_and_missing_files(tmp_path) -> None:
    lab = np.zeros((8, 8), dtype=np.int64)
    lab[1:3, 1:3] = 5
    lab[5:7, 4:8] = 9
    coco = labels_to_coco(lab)
    assert [a["label"] for a in coco["annotations"]] == [5, 9]
    assert [a["area"] for a in coco["annotations"]] == [4, 8]
    with pytest.raises(UserError, match="img2d.tif"):
        write_stardist_coco(tmp_path / "out", directory=tmp_path)
