"""Resume after the driver is killed with SIGKILL: no finished trial is redone, every trial ends
with exactly one row. The sweep runs in subprocess drivers (`peftsweep run` / `peftsweep resume`);
it has two studies (two models x one domain) in one Tune run, each with its Optuna journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from search.results.store import ResultStore

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from driver_procs import kill_tree  # noqa: E402

ROOT = HERE.parent.parent

pytestmark = pytest.mark.slow


def _snapshot_finished(out: Path) -> set[str]:
    """Trial ids that Tune's latest experiment snapshot holds as TERMINATED."""
    # newest by the session time in the name (Tune touches older sessions' files on resume)
    states = sorted((out / "tune").rglob("experiment_state-*.json"), key=lambda p: p.name)
    if not states:
        return set()
    done = set()
    for trial_json, _meta in json.loads(states[-1].read_text())["trial_data"]:
        t = json.loads(trial_json)
        if t.get("status") == "TERMINATED":
            done.add(str(t.get("trial_id")))
    return done


def _experiment_files(out: Path) -> dict[Path, bytes]:
    """Tune's experiment-level files (snapshot, searcher and callback state), not the trial dirs."""
    return {
        p: p.read_bytes() for d in (out / "tune").glob("*") if d.is_dir() for p in d.iterdir() if p.is_file()
    }


# stale_snapshot: the driver dies before Tune's next snapshot -- simulated by putting back the
# experiment files as they were before any trial finished, so every trial that finished before the
# kill is known to the store alone; resume must neither train it again nor rewrite its row.
# cut: the driver dies while Tune writes or copies its snapshot (not atomic in Tune), leaving the
# experiment folder's snapshot empty -- simulated by emptying it; resume restores the whole copy the
# searcher kept (search.engine.experiment_state) instead of failing to restore the run state.
@pytest.mark.parametrize("snapshot", ["whole", "stale", "cut"])
def test_resume_after_kill_9(tmp_path: Path, snapshot: str) -> None:
    stale_snapshot = snapshot == "stale"
    out = tmp_path / "out"
    log = tmp_path / "steps.log"
    cfg = {
        "name": "r",
        "models": [{"name": "maskdino_tiny", "label": "a"}, {"name": "maskdino_tiny", "label": "b"}],
        "domains": ["clean"],
        "space": {"methods": ["lora", "adapter"], "adapter": {"repetitions": [1, 2]}, "iterations": [40]},
        "budget": {"trials": 3, "concurrency": 2, "max_failures": 1},
        "sampler": {"name": "tpe", "seed": 1, "startup_trials": 3},
        "early_stopping": {"enabled": False},
        "trial": {
            "function": "synthetic_trial:prepare",
            "eval_every": 10,
            "extra": {"sleep": 0.6, "log_file": str(log)},
        },
        "output_dir": str(out),
        "wandb": {"enabled": True, "mode": "offline"},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    # WANDB_SERVICE: a W&B service this test process started earlier (another test's sweep) would be
    # shared by both drivers, and the killed driver's open runs would stay "in use" in it.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "WANDB_MODE": "offline"})
    driver = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "run", str(tmp_path / "sweep.yaml"), "--no-report", "--quiet"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = ResultStore(out / "results")
    try:
        deadline = time.time() + 150
        done_before: dict[str, float] = {}
        early: dict[Path, bytes] = {}
        while time.time() < deadline:
            if store.exists():
                df = store.trials()
                if not early and (df.status == "running").any() and not (df.status == "completed").any():
                    early = _experiment_files(out)
                    if not any(p.name.startswith("experiment_state") for p in early):
                        early = {}
                fin = df[df.status == "completed"]
                if len(fin) >= 2:
                    done_before = dict(zip(fin.trial_id, fin.finished_at))
                    break
            assert driver.poll() is None, "driver ended before it could be killed"
            time.sleep(0.3)
        assert len(done_before) >= 2, "no trial finished in time"
    finally:
        kill_tree(driver)
    if stale_snapshot:
        assert early, "no snapshot was taken before the first trial finished"
        for p in _experiment_files(out):
            p.unlink()
        for p, data in early.items():
            p.write_bytes(data)
        assert not _snapshot_finished(out) & set(done_before), "the snapshot already held them"
    if snapshot == "cut":
        newest = sorted((out / "tune").rglob("experiment_state-*.json"), key=lambda p: p.name)[-1]
        kept = out / "state" / "tune" / newest.name
        assert "trial_data" in json.loads(kept.read_text())  # the copy kept at Tune's last save is whole
        newest.write_bytes(b"")
    ledger = out / "wandb" / "logged.json"
    logged_before = set(json.loads(ledger.read_text())) if ledger.exists() else set()
    lr_of = dict(zip(store.trials().trial_id, store.trials().lr))
    assert len(store.trials()) < 6 or (store.trials().status != "completed").any()

    res = subprocess.run(
        [sys.executable, "-m", "search.cli", "resume", str(out), "--no-report", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "non-dominated" in res.stdout

    df = store.trials()
    assert len(df) == 6 and df.trial_id.is_unique
    # the resumed run's final snapshot (the check above reads the same files) holds finished trials
    assert set() < _snapshot_finished(out) <= set(df.trial_id)
    assert df.groupby("study").size().to_dict() == {"a.clean": 3, "b.clean": 3}
    # The Optuna journal: every stored trial COMPLETE in its study; what the killed driver had
    # asked for and no trial ran is FAIL; nothing is left RUNNING.
    import optuna

    sweep_id = json.loads((out / "sweep.json").read_text())["sweep_id"]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna" / "journal.log"))
    )
    for study in ("a.clean", "b.clean"):
        states = {
            t.user_attrs.get("tune_trial_id"): t.state.name
            for t in optuna.load_study(study_name=f"{sweep_id}-{study}", storage=storage).trials
        }
        assert {states.get(t) for t in df[df.study == study].trial_id} == {"COMPLETE"}, states
        assert set(states.values()) <= {"COMPLETE", "FAIL"}, states
    assert set(df.status) == {"completed"}, df[["trial_id", "status", "error"]]
    # trials finished before the kill were not trained again and their rows were not rewritten
    fin_after = dict(zip(df.trial_id, df.finished_at))
    for tid, t in done_before.items():
        assert fin_after[tid] == t
    steps = Counter(line.split()[1] for line in log.read_text().splitlines())
    for tid in done_before:
        assert steps[repr(float(lr_of[tid]))] == 4, (tid, steps)
    # every trial trained to its end at least once (4 evaluation steps)
    assert all(steps[repr(float(lr))] >= 4 for lr in df.lr)
    assert (out / "fronts.json").exists()
    # W&B: every trial has its run (a run cut by the kill is resumed or backfilled), and trials
    # whose run was finished before the kill were not logged again
    assert sorted(json.loads(ledger.read_text())) == sorted(df.trial_id), res.stderr[-3000:]
    run_dirs = [p.name for p in (out / "wandb" / "wandb").glob("offline-run-*")]
    for tid in df.trial_id:
        n = sum(name.endswith(f"-{tid}") for name in run_dirs)
        assert n == 1 if tid in logged_before else n >= 1, (tid, n)
    assert any(name.endswith("-summary") for name in run_dirs)
