"""The guard that keeps a finished trial finished on resume: the store callback never replaces a
finished row with 'running' when Tune restarts the trial (a resumed sweep restarts the trials its
last snapshot saw running), and the trainable's replay of that row leaves it as it is."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from search.engine.callbacks import StoreCallback
from search.engine.trainable import finished_row
from search.results.store import ResultStore

CONFIG = {"method": "lora", "lora_rank": 4, "lr": 1e-3, "iterations": 40}


def _trial(trial_id: str, last_result: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(
        trial_id=trial_id, config=dict(CONFIG), experiment_tag=f"1_{trial_id}", last_result=last_result
    )


def _callback(root: Path) -> StoreCallback:
    return StoreCallback(str(root), "sweep-1", "clean", "tpe", budget=4, quiet=True)


def _row(root: Path, trial_id: str) -> dict[str, Any]:
    table = ResultStore(root).trials_table()
    rows = [r for r in table.to_pylist() if r["trial_id"] == trial_id]
    assert len(rows) == 1, rows
    return rows[0]


def test_trial_start_never_clobbers_a_finished_row(tmp_path: Path) -> None:
    root = tmp_path / "results"
    cb = _callback(root)
    done = {"final": True, "status": "completed", "ap": 0.42, "iteration": 40, "finished_at": 123.0}
    cb.on_trial_complete(0, [], _trial("a", done))
    before = _row(root, "a")
    assert before["status"] == "completed" and before["ap"] == 0.42

    cb.on_trial_start(0, [], _trial("a"))  # Tune restarts it after a resume
    assert _row(root, "a") == before
    replay = finished_row(str(root), "a")  # what the trainable re-reports instead of training
    assert replay is not None and replay["replayed"] is True and replay["ap"] == 0.42
    cb.on_trial_complete(0, [], _trial("a", replay))
    assert _row(root, "a") == before, "a replayed row is not rewritten"

    # a trial without a finished row still gets its 'running' row, and a running row is no guard
    cb.on_trial_start(0, [], _trial("b"))
    assert _row(root, "b")["status"] == "running"
    assert finished_row(str(root), "b") is None


def test_the_guard_reads_the_store_once_per_driver(tmp_path: Path, monkeypatch: Any) -> None:
    """A whole-store read per trial start made the driver's cost per event grow with the sweep."""
    import pickle

    root = tmp_path / "results"
    cb = _callback(root)
    cb.on_trial_complete(0, [], _trial("a", {"final": True, "status": "completed", "ap": 0.1}))
    reads = []
    real = ResultStore.trials_table
    monkeypatch.setattr(ResultStore, "trials_table", lambda self: reads.append(1) or real(self))
    for i in range(20):
        cb.on_trial_start(0, [], _trial(f"n{i}"))
        cb.on_trial_complete(0, [], _trial(f"n{i}", {"final": True, "status": "completed", "ap": 0.2}))
    assert len(reads) == 1
    # its own writes keep the guard current: a finished trial restarted by Tune keeps its row
    before = _row(root, "n3")
    n_reads = len(reads)
    cb.on_trial_start(0, [], _trial("n3"))
    assert len(reads) == n_reads
    assert _row(root, "n3") == before
    # a callback restored from Tune's snapshot (a resumed driver) reads the store afresh
    restored = pickle.loads(pickle.dumps(cb))
    restored.on_trial_start(0, [], _trial("a"))
    assert _row(root, "a")["status"] == "completed"
