"""`data check` / check_coco_dataset on a good set and on each kind of broken input."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.data import PROBLEM_KINDS, check_coco_dataset, write_synthetic_coco
from models.errors import UserError


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("coco")
    path = write_synthetic_coco("source", root, 3, seed=5)
    return root, json.loads(path.read_text())


def _write(root: Path, data: Any, name: str = "broken.json") -> Path:
    p = root / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_good_dataset_reports_counts(good, cli, capsys) -> None:
    root, data = good
    report = check_coco_dataset(root / "annotations.json", root / "images")
    assert report.images == 3
    assert report.instances == len(data["annotations"]) > 0
    assert report.classes == ["disk", "box", "triangle", "blob"]
    assert report.min_size == report.max_size == (128, 128)
    assert report.warning_count == 0 and report.problems == {}
    assert sum(report.instances_per_class.values()) == report.instances
    assert (
        cli(["data", "check", "--json", str(root / "annotations.json"), "--images", str(root / "images")])
        == 0
    )
    out = capsys.readouterr().out
    assert "images: 3" in out and f"instances: {report.instances}" in out and "warnings: 0" in out


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return edit


def _dup_image(d: dict[str, Any]) -> None:
    d["images"].append(dict(d["images"][0]))


def _dup_ann(d: dict[str, Any]) -> None:
    d["annotations"].append(dict(d["annotations"][0]))


def _zero_mask(d: dict[str, Any]) -> None:
    a = d["annotations"][0]
    a["segmentation"] = [[10, 10, 20, 10, 30, 10]]  # collinear: polygon of area 0


# kind -> edit of a valid dataset that must produce exactly that warning (once)
WARNING_CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing_image_file": _set(["images", 0, "file_name"], "nope.png"),
    "unreadable_image": _set(["images", 0, "file_name"], "garbage.png"),
    "image_size_mismatch": _set(["images", 0, "height"], 100),
    "duplicate_image_id": _dup_image,
    "duplicate_annotation_id": _dup_ann,
    "annotation_unknown_image": _set(["annotations", 0, "image_id"], 999),
    "unknown_category_id": _set(["annotations", 0, "category_id"], 77),
    "polygon_too_few_points": _set(["annotations", 0, "segmentation"], [[1, 1, 5, 5]]),
    "invalid_segmentation": _set(["annotations", 0, "segmentation"], {"size": [64, 64], "counts": "xx"}),
    "missing_segmentation": _set(["annotations", 0, "segmentation"], []),
    "empty_box": _set(["annotations", 0, "bbox"], [10, 10, 0, 5]),
    "box_out_of_image": _set(["annotations", 0, "bbox"], [100, 100, 60, 10]),
    "zero_area_mask": _zero_mask,
}


def test_every_problem_kind_has_a_case() -> None:
    assert set(WARNING_CASES) == set(PROBLEM_KINDS)


@pytest.mark.parametrize("kind", sorted(WARNING_CASES))
def test_skippable_problem_is_a_counted_warning(good, kind: str, cli, capsys) -> None:
    root, data = good
    (root / "images" / "garbage.png").write_bytes(b"not a png at all")
    broken = copy.deepcopy(data)
    WARNING_CASES[kind](broken)
    path = _write(root, broken, f"{kind}.json")
    report = check_coco_dataset(path, root / "images")
    assert list(report.problems) == [kind], report.problems
    assert len(report.problems[kind]) == 1
    assert report.warning_count == 1
    image_level = kind in ("missing_image_file", "unreadable_image", "duplicate_image_id")
    assert report.images_listed - report.images == int(image_level)
    assert cli(["data", "check", "--json", str(path), "--images", str(root / "images")]) == 0
    out = capsys.readouterr().out
    assert f"{kind}: 1" in out and "warnings: 1" in out


FATAL_CASES: dict[str, tuple[Any, str]] = {
    "invalid json": ("{not json", "invalid json"),
    "top level list": ([], "top level"),
    "missing images key": ({"annotations": [], "categories": [{"id": 1, "name": "a"}]}, "'images'"),
    "missing categories key": ({"images": [], "annotations": []}, "'categories'"),
    "no images": ({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}, "no images"),
    "no categories": ("CATS", "no categories"),
    "image without file_name": ("IMG", "'file_name'"),
    "annotation without category_id": ("ANN", "'category_id'"),
    "all images missing": ("ALLMISSING", "none of the"),
}


@pytest.mark.parametrize("case", sorted(FATAL_CASES))
def test_unusable_set_is_a_user_error_and_nonzero_exit(good, case: str, cli, capsys) -> None:
    root, data = good
    content, message = FATAL_CASES[case]
    d = copy.deepcopy(data)
    if content == "CATS":
        d["categories"] = []
        content = d
    elif content == "IMG":
        del d["images"][1]["file_name"]
        content = d
    elif content == "ANN":
        del d["annotations"][2]["category_id"]
        content = d
    elif content == "ALLMISSING":
        for im in d["images"]:
            im["file_name"] = "missing/" + im["file_name"]
        content = d
    path = _write(root, content, "fatal.json")
    with pytest.raises(UserError, match=message):
        check_coco_dataset(path, root / "images")
    assert cli(["data", "check", "--json", str(path), "--images", str(root / "images")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftsweep: error:") and len(err.strip().splitlines()) == 1


def test_missing_paths_are_user_errors(good, tmp_path) -> None:
    root, _ = good
    with pytest.raises(UserError, match="--json"):
        check_coco_dataset(tmp_path / "x.json", root / "images")
    with pytest.raises(UserError, match="--images"):
        check_coco_dataset(root / "annotations.json", tmp_path / "nodir")
