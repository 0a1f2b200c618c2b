"""A sweep whose config puts the store elsewhere (``results:`` a folder or an s3:// URI): `status`,
`pareto`, the interactive report, W&B and select's history read that store, not OUT/results; a
sweep folder moved after the run (sweep.json's absolute default path stale) reads its own results/."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sweep_folder import CREATED, FRONT, make_rows, write_sweep_folder  # noqa: E402

from search.cli import main  # noqa: E402
from search.results.interactive import write_interactive  # noqa: E402
from search.results.status import sweep_status  # noqa: E402
from search.results.sweep_files import store_root_of  # noqa: E402

CLEAN_COUNTS = {"completed": 5, "running": 1, "pruned": 1, "infeasible": 1, "failed": 0}


def _check_readers(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every reader of ``out`` sees the rows of sweep_folder.make_rows (a running sweep)."""
    st = sweep_status(out, now=CREATED + 100.0)
    clean, xray = st.studies
    assert st.state == "in progress" and clean.counts == CLEAN_COUNTS
    assert {r["trial_id"] for r in clean.front} == FRONT["clean"]
    assert {r["trial_id"] for r in xray.front} == FRONT["xray"]

    assert main(["status", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [s["counts"]["running"] for s in got["studies"]] == [1, 0]

    assert main(["pareto", str(out), "--json"]) == 0
    fronts = json.loads(capsys.readouterr().out)
    assert {k: {r["trial_id"] for r in v["front"]} for k, v in fronts.items()} == FRONT

    html = write_interactive(out).read_text(encoding="utf-8")
    m = re.search(r"id='peftsweep-summary'>(.*?)</script>", html)
    assert m is not None
    assert json.loads(m.group(1)) == {"clean": {"points": 5, "front": 3}, "xray": {"points": 3, "front": 2}}


def test_store_in_another_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, store = tmp_path / "sweep", tmp_path / "shared" / "store"
    write_sweep_folder(out, results=str(store))
    assert store_root_of(out) == str(store) and not (out / "results").exists()
    _check_readers(out, capsys)


def test_moved_sweep_folder_reads_its_own_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The engine writes sweep.json's results as an absolute path even for the default store;
    # after moving the folder that path is gone, and the folder's own results/ is the store.
    out = tmp_path / "moved"
    write_sweep_folder(out)
    meta = json.loads((out / "sweep.json").read_text())
    meta["results"] = str(tmp_path / "where-it-ran" / "results")
    (out / "sweep.json").write_text(json.dumps(meta))
    assert store_root_of(out) == str(out / "results")
    _check_readers(out, capsys)


def test_store_on_s3(s3_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"s3://sweeps/elsewhere?{s3_server}"
    out = tmp_path / "sweep"
    write_sweep_folder(out, results=uri)
    assert store_root_of(out) == uri and not (out / "results").exists()
    _check_readers(out, capsys)


def test_select_history_reads_the_named_store(tmp_path: Path) -> None:
    from search.selection.warmstart import _trials_of

    out, store = tmp_path / "sweep", tmp_path / "shared" / "store"
    write_sweep_folder(out, results=str(store))
    got = _trials_of(out, "xray")
    assert sorted(r["trial_id"] for r in got) == sorted(
        r["trial_id"] for r in make_rows() if r["domain"] == "xray"
    )
    assert len(_trials_of(store, "xray")) == len(got)  # the store folder itself still works


@pytest.mark.slow  # a few offline W&B runs
def test_wandb_reads_the_named_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from search.results.wandb_log import log_sweep

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out, store = tmp_path / "sweep", tmp_path / "shared" / "store"
    rows = [r for r in make_rows() if r["domain"] == "xray"]  # 3 completed + 1 failed
    config = write_sweep_folder(out, rows, results=str(store))
    ids = log_sweep(out, config)
    assert len(ids) == 5  # one run per stored trial and the summary: the rows were found
    assert json.loads((out / "wandb" / "logged.json").read_text()) != []
