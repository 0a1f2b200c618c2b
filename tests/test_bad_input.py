"""Bad input over the whole CLI, table-driven: every malformed input ends with exit status 2, a first
line ``peftsweep: error: <field or file>: ...`` (further lines may list more problems), no traceback,
and nothing written to (or half-written in) the output folder the command was given.

Inputs: sweep YAML (every section, unknown keys, wrong types, several errors at once -- all named),
COCO json and images, checkpoints (wrong keys, truncated, a pickle weights-only unpickling refuses,
missing, wrong type), CLI arguments, output folders that exist or cannot be written."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.cli import main

FIRST_LINE = re.compile(r"^peftsweep: error: (?P<subject>[^\s:][^:]*?): \S")


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


@dataclass
class Files:
    """Inputs shared by all cases (written once); ``out`` is each case's output folder."""

    root: Path

    def p(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    import torch

    from models import build_model
    from models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bad_input")
    f = Files(root)
    (root / "a_file").write_text("x")
    (root / "not_empty").mkdir()
    (root / "not_empty" / "keep.txt").write_text("keep")
    (root / "imgs").mkdir()
    (root / "imgs" / "broken.png").write_bytes(b"not a png")
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "imgs" / "ok.png")
    # checkpoints
    torch.manual_seed(0)
    save_checkpoint(build_model("maskdino_tiny", num_classes=2), root / "good.pth")
    torch.save({"model": {"encoder.foo.weight": torch.ones(3)}}, root / "wrong_keys.pth")
    data = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 3])
    torch.save({"model": {"a": _Evil()}}, root / "evil.pth")
    with open(root / "evil.pkl", "wb") as fh:
        pickle.dump({"model": {"a": _Evil()}}, fh)
    (root / "weights.bin").write_bytes(data)
    # COCO files
    (root / "invalid.json").write_text('{"images": [')
    (root / "list.json").write_text("[1, 2]")
    (root / "no_annotations.json").write_text('{"images": [], "categories": []}')
    img = {"id": 1, "file_name": "missing.png", "height": 8, "width": 8}
    cat = {"id": 1, "name": "thing"}
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}
    (root / "no_image_file.json").write_text(
        json.dumps({"images": [img], "annotations": [ann], "categories": [cat]})
    )
    good = {**img, "file_name": "ok.png"}
    (root / "ok.json").write_text(json.dumps({"images": [good], "annotations": [ann], "categories": [cat]}))
    broken = {**img, "file_name": "broken.png"}
    (root / "unreadable.json").write_text(
        json.dumps({"images": [broken], "annotations": [ann], "categories": [cat]})
    )
    (root / "category_no_id.json").write_text(
        json.dumps({"images": [img], "annotations": [ann], "categories": [{"name": "x"}]})
    )
    # a folder that already holds a sweep
    (root / "old_sweep").mkdir()
    (root / "old_sweep" / "sweep.json").write_text('{"sweep_id": "x"}')
    (root / "old_sweep" / "sweep.yaml").write_text(yaml.safe_dump({"domains": ["clean"]}))
    # sweep output folder whose saved config is corrupt
    (root / "corrupt_sweep").mkdir()
    (root / "corrupt_sweep" / "sweep.json").write_text('{"sweep_id": "x"}')
    (root / "corrupt_sweep" / "sweep.yaml").write_text("domains: [clean\n")
    return f


# A case: (argv builder, expected subject regex at the start of the first line, extra regexes the
# whole error must contain, the output folder that must stay as it was).
Build = Callable[[Files, Path], list[str]]


@dataclass(frozen=True)
class Case:
    build: Build
    subject: str
    contains: tuple[str, ...] = ()


def _yaml(config: Any, name: str = "sweep.yaml") -> Build:
    """``run CONFIG`` on a config written into the case's folder (output_dir inside ``out``)."""

    def build(f: Files, out: Path) -> list[str]:
        data = config(f, out) if callable(config) else config
        if isinstance(data, dict) and "output_dir" not in data:
            data = {**data, "output_dir": str(out / "sweep")}
        path = out.parent / f"{out.name}-{name}"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return ["run", str(path), "--quiet", "--no-report"]

    return build


OK = {"domains": ["clean"]}
COCO = {"name": "coco", "synthetic": False}


def _coco(json_name: str, images: str = "imgs") -> Callable[[Files, Path], dict[str, Any]]:
    return lambda f, out: {"domains": [{**COCO, "train_json": f.p(json_name), "train_images": f.p(images)}]}


def _base(name: str) -> Callable[[Files, Path], dict[str, Any]]:
    return lambda f, out: {**OK, "model": {"name": "maskdino_tiny", "base_checkpoint": f.p(name)}}


CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ sweep YAML
    "yaml-missing-file": Case(lambda f, out: ["run", f.p("nope.yaml")], r".*nope\.yaml", ("cannot read",)),
    "yaml-syntax": Case(_yaml("domains: [clean\n"), r".*sweep\.yaml", ("not valid YAML",)),
    "yaml-top-level-list": Case(_yaml("- clean\n"), r".*sweep\.yaml", ("top level must be a mapping",)),
    "yaml-unknown-key": Case(_yaml({**OK, "bogus": 1}), r".*sweep\.yaml: bogus", ("unknown key",)),
    "yaml-missing-domains": Case(_yaml({"name": "x"}), r".*sweep\.yaml: domains", ("required",)),
    "yaml-unknown-and-missing": Case(
        _yaml({"bogus": 1}), r".*sweep\.yaml: domains", ("domains: required", "bogus: unknown key")
    ),
    "yaml-wrong-type": Case(
        _yaml({**OK, "budget": {"trials": "ten"}}), r".*sweep\.yaml: budget\.trials", ("integer", "'ten'")
    ),
    "yaml-several-errors": Case(
        _yaml({**OK, "budget": {"trials": "ten"}, "sampler": {"name": "grid"}, "space": {"methods": ["x"]}}),
        r".*sweep\.yaml: \S+",
        ("budget.trials", "sampler.name", "space.methods", "3 problems"),
    ),
    "yaml-domain-unknown": Case(_yaml({"domains": ["mars"]}), r".*sweep\.yaml: domains\[0\]", ("mars",)),
    "yaml-domains-not-list": Case(_yaml({"domains": "clean"}), r".*sweep\.yaml: domains", ("list",)),
    "yaml-coco-without-json": Case(
        _yaml({"domains": [COCO]}), r".*sweep\.yaml: domains\[0\]", ("train_json",)
    ),
    "yaml-method-unknown": Case(
        _yaml({**OK, "space": {"methods": ["prompt"]}}), r".*sweep\.yaml: space\.methods", ("prompt",)
    ),
    "yaml-lora-rank": Case(
        _yaml({**OK, "space": {"lora": {"rank": [0]}}}), r".*sweep\.yaml: space\.lora\.rank", ()
    ),
    "yaml-lr-range": Case(
        _yaml({**OK, "space": {"lr": {"low": 1e-2, "high": 1e-4}}}), r".*sweep\.yaml: space\.lr", ()
    ),
    "yaml-objective-name": Case(
        _yaml({**OK, "objectives": [{"name": "speed", "mode": "max"}]}),
        r".*sweep\.yaml: objectives\[0\]\.name",
        ("speed",),
    ),
    "yaml-constraint-op": Case(
        _yaml({**OK, "constraints": [{"metric": "latency_ms", "op": "<", "value": 5}]}),
        r".*sweep\.yaml: constraints\[0\]\.op",
        (),
    ),
    "yaml-constraint-metric": Case(
        _yaml({**OK, "constraints": [{"metric": "speed", "op": "<=", "value": 5}]}),
        r".*sweep\.yaml: constraints\[0\]\.metric",
        ("speed", "allowed"),
    ),
    "run-latency-device-unknown": Case(
        _yaml({**OK, "trial": {"latency_per_architecture": True, "latency_device": "latency_nowhere"}}),
        r"trial\.latency_device",
        ("no node offers Ray resource 'latency_nowhere'",),
    ),
    "yaml-sampler": Case(
        _yaml({**OK, "sampler": {"name": "grid"}}), r".*sweep\.yaml: sampler\.name", ("grid",)
    ),
    "yaml-concurrency": Case(
        _yaml({**OK, "budget": {"concurrency": 0}}), r".*sweep\.yaml: budget\.concurrency", ()
    ),
    "yaml-early-stopping": Case(
        _yaml({**OK, "early_stopping": {"enabled": "sometimes"}}),
        r".*sweep\.yaml: early_stopping\.enabled",
        (),
    ),
    "yaml-trial-function": Case(
        _yaml({**OK, "trial": {"function": "no colon"}}), r".*sweep\.yaml: trial\.function", ()
    ),
    "yaml-model-unknown": Case(_yaml({**OK, "model": {"name": "yolo"}}), r"model\.name", ("yolo",)),
    # ------------------------------------------------------------------ sweep output folders
    "run-output-under-file": Case(
        _yaml(lambda f, out: {**OK, "output_dir": f.p("a_file/sweep")}), r"output_dir", ("cannot be created",)
    ),
    "run-output-is-file": Case(
        _yaml(lambda f, out: {**OK, "output_dir": f.p("a_file")}), r"output_dir", ("not a folder",)
    ),
    "run-output-holds-sweep": Case(
        _yaml(lambda f, out: {**OK, "output_dir": f.p("old_sweep")}),
        r"output_dir",
        ("already holds a sweep",),
    ),
    # ------------------------------------------------------------------ checkpoints
    "base-missing": Case(_yaml(_base("nope.pth")), r"model\.base_checkpoint", ("no such file",)),
    "base-wrong-keys": Case(
        _yaml(_base("wrong_keys.pth")), r".*wrong_keys\.pth", ("does not fit", "missing (", "unexpected (")
    ),
    "base-truncated": Case(_yaml(_base("truncated.pth")), r".*truncated\.pth", ("truncated or corrupt",)),
    "base-refused-pickle": Case(_yaml(_base("evil.pth")), r".*evil\.pth", ("weights-only",)),
    "base-refused-pkl": Case(_yaml(_base("evil.pkl")), r".*evil\.pkl", ("weights-only",)),
    "base-wrong-type": Case(_yaml(_base("weights.bin")), r".*weights\.bin", ("unsupported",)),
    # ------------------------------------------------------------------ COCO json + images in a sweep
    "coco-json-missing": Case(_yaml(_coco("nope.json")), r"domains\[0\]\.train_json", ("no such file",)),
    "coco-images-missing": Case(
        _yaml(_coco("no_image_file.json", "no_dir")), r"domains\[0\]\.train_images", ("no such folder",)
    ),
    "coco-json-invalid": Case(_yaml(_coco("invalid.json")), r".*invalid\.json", ("invalid json",)),
    "coco-json-keys": Case(_yaml(_coco("no_annotations.json")), r".*no_annotations\.json", ("annotations",)),
    # ------------------------------------------------------------------ data check
    "check-json-missing": Case(
        lambda f, out: ["data", "check", "--json", f.p("nope.json"), "--images", f.p("imgs")], r"--json", ()
    ),
    "check-images-not-dir": Case(
        lambda f, out: ["data", "check", "--json", f.p("invalid.json"), "--images", f.p("a_file")],
        r"--images",
        (),
    ),
    "check-invalid-json": Case(
        lambda f, out: ["data", "check", "--json", f.p("invalid.json"), "--images", f.p("imgs")],
        r".*invalid\.json",
        ("invalid json",),
    ),
    "check-json-list": Case(
        lambda f, out: ["data", "check", "--json", f.p("list.json"), "--images", f.p("imgs")],
        r".*list\.json",
        ("top level",),
    ),
    "check-image-files-missing": Case(
        lambda f, out: ["data", "check", "--json", f.p("no_image_file.json"), "--images", f.p("imgs")],
        r".*no_image_file\.json",
        ("none of the 1 images",),
    ),
    "check-image-unreadable": Case(
        lambda f, out: ["data", "check", "--json", f.p("unreadable.json"), "--images", f.p("imgs")],
        r".*unreadable\.json",
        ("none of the 1 images",),
    ),
    "check-category-without-id": Case(
        lambda f, out: ["data", "check", "--json", f.p("category_no_id.json"), "--images", f.p("imgs")],
        r".*category_no_id\.json",
        ("id",),
    ),
    "check-report-json-unwritable": Case(
        lambda f, out: [
            "data",
            "check",
            "--json",
            f.p("no_image_file.json"),
            "--images",
            f.p("imgs"),
            "--report-json",
            f.p("a_file/report.json"),
        ],  # fmt: skip
        r"--report-json",
        ("not a folder",),
    ),
    # ------------------------------------------------------------------ data synth / pretrain / bench
    "synth-domain": Case(
        lambda f, out: ["data", "synth", "--domain", "mars", "--out", str(out)], r"(--)?domain", ()
    ),
    "synth-num-images-type": Case(
        lambda f, out: ["data", "synth", "--domain", "clean", "--out", str(out), "--num-images", "x"],
        r"--num-images",
        ("invalid int",),
    ),
    "synth-num-images-zero": Case(
        lambda f, out: ["data", "synth", "--domain", "clean", "--out", str(out), "--num-images", "0"],
        r"--num-images",
        (),
    ),
    "synth-out-under-file": Case(
        lambda f, out: ["data", "synth", "--domain", "clean", "--out", f.p("a_file/x"), "--num-images", "1"],
        r"--out",
        ("cannot be created",),
    ),
    "synth-out-not-empty": Case(
        lambda f, out: ["data", "synth", "--domain", "clean", "--out", f.p("not_empty"), "--num-images", "1"],
        r"--out",
        ("not empty",),
    ),
    "synth-missing-out": Case(lambda f, out: ["data", "synth", "--domain", "clean"], r"--out", ("required",)),
    "pretrain-out-under-file": Case(
        lambda f, out: ["pretrain", "--out", f.p("a_file/base"), "--iterations", "1"], r"--out", ()
    ),
    "pretrain-iterations": Case(
        lambda f, out: ["pretrain", "--out", str(out), "--iterations", "0"], r"--iterations", ()
    ),
    "bench-out-under-file": Case(
        lambda f, out: ["bench", "kernel", "--small", "--out", f.p("a_file/bench")], r"--out", ()
    ),
    # ------------------------------------------------------------------ CLI arguments
    "unknown-command": Case(lambda f, out: ["frobnicate"], r"COMMAND", ("invalid choice",)),
    "unknown-option": Case(lambda f, out: ["pareto", f.p("old_sweep"), "--colour"], r"--colour", ()),
    "params-model": Case(
        lambda f, out: ["params", "--model", "yolo", "--method", "lora"], r"(--)?model", ("yolo",)
    ),
    "params-method": Case(
        lambda f, out: ["params", "--model", "maskdino_tiny", "--method", "prompt"], r"--method", ("prompt",)
    ),
    "params-rank": Case(
        lambda f, out: ["params", "--model", "maskdino_tiny", "--method", "lora", "--rank", "-1"],
        r"--rank",
        (),
    ),
    "pareto-not-a-sweep": Case(lambda f, out: ["pareto", f.p("imgs")], r".*imgs", ("not a sweep output",)),
    "pareto-objectives": Case(
        lambda f, out: ["pareto", f.p("old_sweep"), "--objectives", "ap,speed"], r"--objectives", ("speed",)
    ),
    "report-not-a-sweep": Case(lambda f, out: ["report", f.p("imgs")], r".*imgs", ("not a sweep output",)),
    "resume-not-a-sweep": Case(lambda f, out: ["resume", f.p("imgs")], r".*imgs", ("not a sweep output",)),
    "resume-corrupt-config": Case(
        lambda f, out: ["resume", f.p("corrupt_sweep")], r".*sweep\.yaml", ("YAML",)
    ),
    "select-data-missing": Case(
        lambda f, out: [
            "select",
            "--data",
            f.p("nope.json"),
            "--images",
            f.p("imgs"),
            "--latency-budget-ms",
            "50",
            "--param-budget-pct",
            "5",
            "--min-ap-fraction",
            "0.9",
            "--out",
            str(out),
        ],  # fmt: skip
        r"--data",
        (),
    ),
    "select-base-truncated": Case(
        lambda f, out: [
            "select",
            "--data",
            f.p("ok.json"),
            "--images",
            f.p("imgs"),
            "--base",
            f.p("truncated.pth"),
            "--latency-budget-ms",
            "50",
            "--param-budget-pct",
            "5",
            "--min-ap-fraction",
            "0.9",
            "--out",
            str(out),
        ],  # fmt: skip
        r".*truncated\.pth",
        ("truncated or corrupt",),
    ),
    "select-eval-pair": Case(
        lambda f, out: [
            "select",
            "--data",
            f.p("ok.json"),
            "--images",
            f.p("imgs"),
            "--eval-data",
            f.p("ok.json"),
            "--latency-budget-ms",
            "50",
            "--param-budget-pct",
            "5",
            "--min-ap-fraction",
            "0.9",
            "--out",
            str(out),
        ],  # fmt: skip
        r"--eval-data",
        (),
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    out = tmp_path / "out"
    argv = case.build(files, out)
    before = _snapshot(files.root)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse must not exit on its own: its errors follow the same format
        pytest.fail(f"SystemExit({exc.code}) instead of returning 2")
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, err, captured.out[-2000:])
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    assert FIRST_LINE.match(lines[0]), lines[0]
    assert re.match(rf"peftsweep: error: {case.subject}: ", lines[0]), (case.subject, lines[0])
    for text in case.contains:
        assert text in err, (text, err)
    assert "Traceback" not in err and "Traceback" not in captured.out
    # nothing written: the case's output folder was not created, the shared inputs are unchanged
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert _snapshot(files.root) == before
