"""`peftsweep status OUT`: trials by state, the front so far, its hypervolume, elapsed and ETA per study."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from sweep_folder import CREATED, FRONT, make_rows, write_sweep_folder  # noqa: E402

from search.results.status import format_status, sweep_status  # noqa: E402


def _union_volume(boxes: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Volume of a union of axis-aligned boxes by inclusion-exclusion (an independent HV reference)."""
    total = 0.0
    for k in range(1, len(boxes) + 1):
        for combo in itertools.combinations(boxes, k):
            lo = np.max([b[0] for b in combo], axis=0)
            hi = np.min([b[1] for b in combo], axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(hi - lo, 0, None)))
    return total


def _expected_hv(rows: list[dict], ids: set[str], ref: tuple[float, float, float]) -> float:
    # minimisation space: (-ap, trainable_pct, latency_ms); each point dominates the box up to ref
    boxes = []
    for r in rows:
        if r["trial_id"] in ids:
            p = np.array([-r["ap"], r["trainable_pct"], r["latency_ms"]])
            boxes.append((p, np.array([-ref[0], ref[1], ref[2]])))
    return _union_volume(boxes)


def test_status_per_study(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    write_sweep_folder(out)
    now = CREATED + 100.0
    st = sweep_status(out, now=now)
    assert st.sweep_id == "fake-sweep" and st.state == "in progress"
    clean, xray = st.studies
    assert clean.study == "clean" and xray.study == "xray"
    assert clean.counts == {"completed": 5, "running": 1, "pruned": 1, "infeasible": 1, "failed": 0}
    assert xray.counts == {"completed": 3, "running": 0, "pruned": 0, "infeasible": 0, "failed": 1}
    assert clean.state == "running" and xray.state == "stopped"
    assert {r["trial_id"] for r in clean.front} == FRONT["clean"]
    assert {r["trial_id"] for r in xray.front} == FRONT["xray"]
    rows = make_rows()
    # reference point: ap 0, trainable 100 (configured), latency 13 (the constraint's bound)
    assert clean.reference_point == [0.0, 100.0, 13.0]
    assert clean.hypervolume == pytest.approx(_expected_hv(rows, FRONT["clean"], (0.0, 100.0, 13.0)))
    assert xray.hypervolume == pytest.approx(_expected_hv(rows, FRONT["xray"], (0.0, 100.0, 13.0)))
    assert clean.best == {"ap": 0.40, "trainable_pct": pytest.approx(0.1), "latency_ms": 10.0}
    # elapsed from the first start; ETA at the mean rate: 7 of 8 finished in 100 s, 4 of 8 in 100 s
    assert clean.elapsed_s == pytest.approx(100.0) and clean.eta_s == pytest.approx(100.0 / 7)
    assert xray.eta_s == pytest.approx(100.0)
    assert st.eta_s == pytest.approx(100.0 / 7 + 100.0)
    text = format_status(st, now=now)
    assert "study clean (running): 7/8 finished (5 completed, 1 running, 1 pruned, 1 infeasible" in text
    assert "front: 3 trial(s), hypervolume" in text and "clean_02" in text
    # Compute over finished trained trials: clean 5 x 40 + 10 (stopped) of 6 x 40 scheduled;
    # xray 3 x 40 + 5 (failed) of 4 x 40. Running and infeasible trials are not counted.
    assert (clean.iterations_trained, clean.iterations_scheduled) == (210, 240)
    assert (xray.iterations_trained, xray.iterations_scheduled) == (125, 160)
    assert clean.compute_saved == pytest.approx(240 / 210)
    assert "compute: 210 of 240 scheduled iterations trained (1.14x saved); 1 of 6 trained trials" in text
    assert st.to_json()["studies"][0]["compute_saved"] == pytest.approx(240 / 210)


def test_a_finished_sweep_has_no_eta(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    rows = [r for r in make_rows() if r["status"] != "running"]
    write_sweep_folder(out, rows, trials=4)  # xray: 4 of 4; clean: 7 of 4 (more than its budget)
    st = sweep_status(out, now=CREATED + 1000.0)
    assert st.state == "finished" and st.eta_s == 0.0
    assert all(s.state == "finished" for s in st.studies)
    # elapsed ends at the last trial's end, not now
    assert st.elapsed_s == pytest.approx(max(r["finished_at"] for r in rows) - CREATED)


def test_a_study_not_started_is_estimated_from_the_others(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    write_sweep_folder(out, [r for r in make_rows() if r["domain"] == "clean"])
    st = sweep_status(out, now=CREATED + 100.0)
    clean, xray = st.studies
    assert xray.state == "waiting" and xray.eta_s is None and xray.front == []
    assert st.eta_s == pytest.approx(100.0 / 7 + 100.0 / 7 * 8)


def test_status_cli_json_and_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search.cli import main

    out = tmp_path / "sweep"
    write_sweep_folder(out)
    assert main(["status", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [s["study"] for s in got["studies"]] == ["clean", "xray"]
    assert got["studies"][0]["counts"]["running"] == 1 and got["studies"][0]["front_size"] == 3
    assert main(["status", str(out)]) == 0
    assert "== study xray (stopped): 4/8 finished" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftsweep: error: ") and "sweep.json" in err and len(err.splitlines()) == 1
