"""A sweep of several models x domains in one Tune run (synthetic trials): studies overlap in time,
the slots stay shared, a reader in a tight loop never fails, the Optuna journal holds every trial
with its state, fronts and report per study."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from search.config import SweepConfig, parse_config
from search.engine.repeats import REPEAT_ATTR
from search.engine.runner import SweepResult, run_sweep
from search.results.store import ResultStore

pytestmark = pytest.mark.slow

CONCURRENCY = 3


def multi_config(out: Path, **over: Any) -> SweepConfig:
    # The first trial waits (up to 60 s) until a second one has started: the overlap checked below
    # then does not hang on how fast a loaded machine starts Ray workers.
    cfg: dict[str, Any] = {
        "name": "multi",
        "models": [
            {"name": "maskdino_tiny", "label": "a"},
            {"name": "maskdino_tiny", "label": "b", "trials": 2},
        ],
        "domains": ["clean", "xray"],
        "space": {
            "methods": ["lora", "adapter"],
            "lora": {"rank": [2, 4, 8, 16]},
            "adapter": {"repetitions": [1, 2, 3], "reduction": [4, 8]},
            "iterations": [40],
        },
        "budget": {"trials": 4, "concurrency": CONCURRENCY, "cpus_per_trial": 0.5, "max_failures": 0},
        "sampler": {"name": "tpe", "seed": 1, "startup_trials": 2},
        "early_stopping": {"grace_iterations": 10, "reduction_factor": 2},
        "trial": {
            "function": "synthetic_trial:prepare",
            "eval_every": 10,
            "extra": {"sleep": 0.15, "rendezvous": str(out.parent / "rendezvous")},
        },
        "output_dir": str(out),
    }
    cfg.update(over)
    return parse_config(cfg)


@pytest.fixture(scope="module")
def multi(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SweepResult, dict]]:
    out = tmp_path_factory.mktemp("multi") / "out"
    cfg = multi_config(out)
    reads: dict[str, Any] = {"n": 0, "errors": [], "max_rows": 0}
    stop = threading.Event()

    def reader() -> None:  # a status page / report refreshing while the sweep writes
        store = ResultStore(out / "results")
        while not stop.is_set():
            try:
                df = store.trials()
                store.intermediate()
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                reads["errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            reads["n"] += 1
            reads["max_rows"] = max(reads["max_rows"], len(df))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        res = run_sweep(cfg, quiet=True)
    finally:
        stop.set()
        th.join(30)
    yield res, reads


def test_every_study_runs_its_budget_in_one_experiment(multi: tuple[SweepResult, dict]) -> None:
    res, _ = multi
    df = res.trials
    assert df.trial_id.is_unique
    assert df.groupby("study").size().to_dict() == {"a.clean": 4, "a.xray": 4, "b.clean": 2, "b.xray": 2}
    assert set(zip(df.study, df.model, df.domain)) == {
        ("a.clean", "a", "clean"),
        ("a.xray", "a", "xray"),
        ("b.clean", "b", "clean"),
        ("b.xray", "b", "xray"),
    }
    for _, rows in df.groupby("study"):  # numbered within their study
        assert sorted(rows.trial_number) == list(range(1, len(rows) + 1))
    assert set(res.fronts) == {"a.clean", "a.xray", "b.clean", "b.xray"}
    assert [p.name for p in (res.output_dir / "tune").iterdir() if p.is_dir()] == ["sweep"]
    html = (res.output_dir / "report" / "index.html").read_text()
    assert all(f"Study {s}" in html for s in res.fronts)


def _overlap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    return max(
        0.0, min(a.finished_at.max(), b.finished_at.max()) - max(a.started_at.min(), b.started_at.min())
    )


def test_studies_run_at_the_same_time_and_share_the_slots(multi: tuple[SweepResult, dict]) -> None:
    res, _ = multi
    df = res.trials
    studies = {s: rows for s, rows in df.groupby("study")}
    # Every pair of studies was running at the same time (not one after another).
    names = sorted(studies)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert _overlap(studies[x], studies[y]) > 0, (x, y)
    # Never more than `concurrency` trials at once over all studies; several at once in practice.
    events = sorted([(t, 1) for t in df.started_at] + [(t, -1) for t in df.finished_at])
    cur = peak = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    assert 2 <= peak <= CONCURRENCY


def test_a_reader_in_a_tight_loop_never_failed(multi: tuple[SweepResult, dict]) -> None:
    res, reads = multi
    assert reads["errors"] == []
    assert reads["n"] >= 20 and reads["max_rows"] >= 1


def test_the_journal_holds_every_trial_with_its_state(multi: tuple[SweepResult, dict]) -> None:
    res, _ = multi
    journal = res.output_dir / "optuna" / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    summaries = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert summaries == {f"{res.sweep_id}-{s}" for s in res.fronts}
    want = {"completed": "COMPLETE", "pruned": "PRUNED", "infeasible": "PRUNED", "failed": "FAIL"}
    df = res.trials
    for study, rows in df.groupby("study"):
        st = optuna.load_study(study_name=f"{res.sweep_id}-{study}", storage=storage)
        got = {t.user_attrs["tune_trial_id"]: t for t in st.trials if REPEAT_ATTR not in t.user_attrs}
        assert set(got) == set(rows.trial_id)
        for r in rows.itertuples():
            t = got[r.trial_id]
            assert t.state.name == want[r.status], (r.trial_id, r.status, t.state)
            if r.status == "completed":
                assert t.values[0] == pytest.approx(r.ap)
    # The store was compacted at the end: one part per table.
    assert ResultStore(res.output_dir / "results").num_parts() == 1


def test_sweep_files_reach_readers(multi: tuple[SweepResult, dict]) -> None:
    res, _ = multi
    t0 = time.time()
    df = ResultStore(res.output_dir / "results").trials()
    assert len(df) == 12 and time.time() - t0 < 5


def test_the_report_states_each_studys_compute_stops_and_repeats(multi: tuple[SweepResult, dict]) -> None:
    import re

    res, _ = multi
    html = (res.output_dir / "report" / "index.html").read_text()
    journal = res.output_dir / "optuna" / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    for study, rows in res.trials.groupby("study"):
        trained = rows[rows.status.isin(["completed", "pruned", "failed"])]
        done, sched = int(trained.iterations_done.sum()), int(trained.iterations.sum())
        stopped = int((rows.status == "pruned").sum())
        st = optuna.load_study(study_name=f"{res.sweep_id}-{study}", storage=storage)
        repeats = sum(1 for t in st.trials if REPEAT_ATTR in t.user_attrs)
        section = html.split(f"Study {study}<", 1)[1].split("<h2>", 1)[0]
        m = re.search(
            r"Compute: (\d+) of (\d+) scheduled iterations trained "
            r"\(([\d.]+)x saved by early stopping\); (\d+) of (\d+) trained",
            section,
        )
        assert m, section[:400]
        assert (int(m[1]), int(m[2]), int(m[4]), int(m[5])) == (done, sched, stopped, len(trained))
        assert float(m[3]) == pytest.approx(sched / done, abs=0.005)
        assert (f"; {repeats} proposals repeated" in section) == (repeats > 0)
