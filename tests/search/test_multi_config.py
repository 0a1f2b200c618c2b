"""Multi-study configs: studies and budgets from `models:` x `domains:`, the paper grid and its CPU
twin parse, and bad input (a study named twice, an unknown model, a missing checkpoint, an
unreachable store) ends with one line naming the field, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from models.errors import UserError
from search.cli import main
from search.config import load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "search" / "configs"


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "m",
        "models": [{"name": "maskdino_tiny", "label": "r50"}, {"name": "seem_tiny", "trials": 2}],
        "domains": ["clean", "xray"],
        "budget": {"trials": 5, "per_study": {"r50.xray": 9}, "total_trials": 12},
        "trial": {"function": "synthetic_trial:prepare"},
    }
    cfg.update(over)
    return cfg


def test_studies_are_model_x_domain_pairs_with_their_budgets() -> None:
    c = parse_config(_cfg())
    got = [(s.name, s.label, s.model.name, s.domain.name, s.trials) for s in c.studies()]
    assert got == [
        ("r50.clean", "r50", "maskdino_tiny", "clean", 5),
        ("r50.xray", "r50", "maskdino_tiny", "xray", 9),
        ("seem_tiny.clean", "seem_tiny", "seem_tiny", "clean", 2),
        ("seem_tiny.xray", "seem_tiny", "seem_tiny", "xray", 2),
    ]
    assert c.budget.total_trials == 12
    # One model: studies are the domains (the layout of every sweep before multi-study configs).
    one = parse_config({"domains": ["clean", "xray"], "model": {"name": "maskdino_tiny"}})
    assert [s.name for s in one.studies()] == ["clean", "xray"]


def test_paper_grid_and_its_cpu_twin_parse() -> None:
    grid = load_config(CONFIGS / "paper_grid.yaml")
    assert [s.name for s in grid.studies()][:4] == [
        "maskdino_r50.ndd20",
        "maskdino_r50.zerowaste_f",
        "maskdino_r50.wixray",
        "maskdino_r50.cityscapes",
    ]
    assert len(grid.studies()) == 12 and set(grid.space.methods) == {
        "lora",
        "adapter",
        "full_head",
        "decoder_only",
        "class_mask",
    }
    twin = load_config(CONFIGS / "paper_grid_cpu.yaml")
    assert len(twin.studies()) == 12 and twin.space.methods == grid.space.methods
    assert {m.name for m in twin.model_entries()} == {"maskdino_tiny", "seem_tiny"}


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"models": [{"name": "maskdino_tiny"}, {"name": "maskdino_tiny"}]},
            r"models: \[1\]: studies named twice: models\[0\] and models\[1\] are both 'maskdino_tiny'",
        ),
        ({"budget": {"per_study": {"nope.clean": 3}}}, r"budget.per_study: unknown study 'nope.clean'"),
        ({"model": {"name": "maskdino_tiny"}}, r"model, models: give one of them"),
    ],
)
def test_config_errors_name_the_field(over: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_config(_cfg(**over), source="sweep.yaml")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], cfg: dict[str, Any]) -> str:
    cfg = {**cfg, "budget": {"trials": 1}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "sweep.yaml"), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert not (tmp_path / "out").exists(), "a rejected sweep wrote its output folder"
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_model_and_missing_checkpoint_stop_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run(tmp_path, capsys, _cfg(models=[{"name": "maskdino_r50"}, {"name": "maskdino_r51"}]))
    assert err.startswith("peftsweep: error: models[1].name: unknown model 'maskdino_r51'; allowed: ")
    err = _run(
        tmp_path,
        capsys,
        _cfg(models=[{"name": "maskdino_r50", "base_checkpoint": "/nonexistent/maskdino_r50.pth"}]),
    )
    assert err == "peftsweep: error: models[0].base_checkpoint: /nonexistent/maskdino_r50.pth: no such file"
    err = _run(
        tmp_path, capsys, _cfg(models=None, model={"name": "maskdino_tiny", "base_checkpoint": "x.pt"})
    )
    assert err.startswith("peftsweep: error: model.base_checkpoint: ") and err.endswith("x.pt: no such file")


def test_unreachable_store_uri_stops_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server = pytest.importorskip("moto.server")
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        host, port = srv.get_host_and_port()
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(k, "test")
        uri = f"s3://no-such-bucket/sweeps?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        err = _run(tmp_path, capsys, _cfg(results=uri))
        assert err.startswith(f"peftsweep: error: results: {uri}: bucket 'no-such-bucket' not found"), err
        err = _run(tmp_path, capsys, _cfg(results="ftp2://somewhere/x"))
        assert err.startswith("peftsweep: error: results: ftp2://somewhere/x: not a usable store URI"), err
    finally:
        srv.stop()
