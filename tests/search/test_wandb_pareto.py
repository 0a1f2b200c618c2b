"""W&B: each study's summary carries a table of its completed trials (parameters, objectives, on the
front, knee: what a researcher filters and feeds the parallel-coordinates panel) and a Pareto scatter
of its front. Written offline from a sweep folder's store and read back from the run's files."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sweep_folder import FRONT, make_rows, write_sweep_folder  # noqa: E402

pytestmark = pytest.mark.slow  # a few offline W&B runs (~2 s each)


def _table(run_dir: str, key: str) -> list[dict]:
    paths = sorted(glob.glob(f"{run_dir}/files/media/table/{key}_*.table.json"))
    assert paths, f"no table {key} in {run_dir}"
    t = json.loads(Path(paths[-1]).read_text())
    return [dict(zip(t["columns"], row)) for row in t["data"]]


def test_summary_run_has_study_tables_and_pareto_scatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.results.wandb_log import log_sweep

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "sweep"
    rows = [r for r in make_rows() if r["domain"] == "xray"]  # 3 completed + 1 failed: 4 trial runs
    config = write_sweep_folder(out, rows)
    ids = log_sweep(out, config)
    assert len(ids) == 5
    summary = [d for d in glob.glob(str(out / "wandb" / "wandb" / "offline-run-*")) if d.endswith("-summary")]
    assert len(summary) == 1
    table = _table(summary[0], "trials/xray")
    assert sorted(r["trial_id"] for r in table) == ["xray_00", "xray_02", "xray_03"]  # completed only
    assert {r["trial_id"] for r in table if r["on_front"]} == FRONT["xray"]
    assert sum(r["knee"] for r in table) == 1
    by_id = {r["trial_id"]: r for r in rows}
    for r in table:  # parameters and objectives as stored
        want = by_id[r["trial_id"]]
        assert r["method"] == want["method"] and r["lr"] == pytest.approx(want["lr"])
        assert r["ap"] == pytest.approx(want["ap"]) and r["latency_ms"] == pytest.approx(want["latency_ms"])
    # the Pareto scatter: the front, AP against each cost objective
    for x in ("trainable_pct", "latency_ms"):
        pts = _table(summary[0], f"pareto_scatter/xray/ap_vs_{x}_table")
        assert {p["trial_id"] for p in pts} == FRONT["xray"]
        assert all(p["on_front"] for p in pts)
