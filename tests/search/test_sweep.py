"""A small real sweep on local Ray (synthetic trial function), then everything built on its output:
store rows, what Optuna was told, fronts, report, `peftsweep pareto`, W&B offline logging."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.config import SweepConfig, parse_config
from search.engine.repeats import REPEAT_ATTR
from search.engine.runner import SweepResult, run_sweep
from search.results.pareto import compute_fronts

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

pytestmark = pytest.mark.slow


def synthetic_config(out: Path, **over: object) -> SweepConfig:
    cfg: dict[str, object] = {
        "name": "t",
        "domains": ["clean", "xray"],
        "space": {
            "methods": ["lora", "adapter"],
            "lora": {"rank": [2, 4, 8, 16]},
            "adapter": {"repetitions": [1, 2, 3], "reduction": [4, 8]},
            "iterations": [40],
        },
        "constraints": [{"metric": "latency_ms", "op": "<=", "value": 13.0}],
        "budget": {"trials": 6, "concurrency": 2, "max_failures": 1},
        "sampler": {"name": "nsga2", "seed": 3, "population_size": 4},
        "early_stopping": {"grace_iterations": 10, "reduction_factor": 2},
        "trial": {"function": "synthetic_trial:prepare", "eval_every": 10},
        "output_dir": str(out),
        "wandb": {"enabled": False, "mode": "offline"},
    }
    cfg.update(over)
    return parse_config(cfg)


SECRET = "secret-hunter2-" + "x" * 24  # a W&B key in the environment: must never be written anywhere


@pytest.fixture(scope="module")
def sweep(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepConfig, SweepResult]:
    # W&B on (offline): the trial runs and the summary are written live while the sweep runs.
    cfg = synthetic_config(
        tmp_path_factory.mktemp("sweep") / "out", wandb={"enabled": True, "mode": "offline"}
    )
    old = os.environ.get("WANDB_API_KEY")
    os.environ["WANDB_API_KEY"] = SECRET
    try:
        return cfg, run_sweep(cfg, quiet=True)
    finally:
        if old is None:
            os.environ.pop("WANDB_API_KEY", None)
        else:
            os.environ["WANDB_API_KEY"] = old


def test_one_row_per_trial_with_statuses(sweep: tuple[SweepConfig, SweepResult]) -> None:
    from synthetic_trial import costs_of

    cfg, res = sweep
    df = res.trials
    assert len(df) == 12 and df.trial_id.is_unique
    assert sorted(df.groupby("domain").size().to_dict().items()) == [("clean", 6), ("xray", 6)]
    assert set(df.status) <= {"completed", "pruned", "infeasible"}, df.status.tolist()
    assert (df.status == "completed").sum() >= 2
    assert (df.sweep_id == res.sweep_id).all() and df.config_json.notna().all()
    assert sorted(df[df.domain == "clean"].trial_number) == [1, 2, 3, 4, 5, 6]
    for rec in df.to_dict(orient="records"):
        params = {
            k: rec[k]
            for k in ("method", "lora_rank", "adapter_repetitions", "adapter_reduction")
            if rec[k] == rec[k] and rec[k] is not None
        }
        costs = costs_of({k: int(v) if isinstance(v, float) else v for k, v in params.items()})
        assert rec["latency_ms"] == pytest.approx(costs["latency_ms"])
        if rec["status"] == "infeasible":
            # stopped before any training: no intermediate result, violation stated
            assert rec["latency_ms"] > 13.0 and "violates latency_ms <= 13.0" in rec["stop_reason"]
        else:
            assert rec["latency_ms"] <= 13.0
        if rec["status"] == "completed":
            assert rec["iterations_done"] == 40 and rec["ap"] > 0
        if rec["status"] == "pruned":
            assert rec["iterations_done"] < 40
            assert rec["stop_reason"].startswith("early-stopped by MO-ASHA at rung")
    inter = res.trials  # noqa: F841 - keep name for clarity below
    from search.results.store import ResultStore

    it = ResultStore(res.output_dir / "results").intermediate()
    assert it.groupby(["trial_id", "iteration"]).size().max() == 1
    infeasible = set(df.trial_id[df.status == "infeasible"])
    assert not infeasible & set(it.trial_id)


def test_optuna_was_told_pruned_and_front_holds_only_completed(
    sweep: tuple[SweepConfig, SweepResult],
) -> None:
    from optuna.trial import TrialState

    cfg, res = sweep
    df = res.trials.set_index("trial_id")
    import optuna

    # Every study lives in the sweep's Optuna journal (optuna-dashboard / optuna.load_study).
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(res.output_dir / "optuna" / "journal.log"))
    )
    for dom in ("clean", "xray"):
        study = optuna.load_study(study_name=f"{res.sweep_id}-{dom}", storage=storage)
        told = {t.user_attrs["tune_trial_id"]: t for t in study.trials if REPEAT_ATTR not in t.user_attrs}
        assert len(told) == 6
        expect = {
            "completed": TrialState.COMPLETE,
            "pruned": TrialState.PRUNED,
            "infeasible": TrialState.PRUNED,
        }
        for tid, ft in told.items():
            assert ft.state == expect[df.loc[tid, "status"]], (tid, df.loc[tid, "status"], ft.state)
            if ft.state == TrialState.COMPLETE:
                assert ft.values == pytest.approx([df.loc[tid, m] for m in cfg.metric_names])
            else:
                assert ft.values is None  # no truncated values in the study
        best = {tuple(t.values) for t in study.best_trials}
        completed = {
            tuple(df.loc[tid, cfg.metric_names])
            for tid, ft in told.items()
            if df.loc[tid, "status"] == "completed"
        }
        assert best and best <= completed


def test_fronts_file_report_and_pareto_cli(
    sweep: tuple[SweepConfig, SweepResult], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, res = sweep
    fronts = json.loads((res.output_dir / "fronts.json").read_text())
    again = compute_fronts(
        res.trials, cfg.metric_names, cfg.modes, [o.ref for o in cfg.objectives], cfg.constraints
    )
    for dom in ("clean", "xray"):
        assert fronts[dom]["hypervolume"] == pytest.approx(again[dom].hypervolume)
        ids = {r["trial_id"] for r in fronts[dom]["front"]}
        assert ids == set(again[dom].front.trial_id)
        assert all(res.trials.set_index("trial_id").loc[i, "status"] == "completed" for i in ids)
    html = (res.output_dir / "report" / "index.html").read_text()
    assert "Domain clean" in html and "Domain xray" in html and "front-clean.png" in html
    png = (res.output_dir / "report" / "front-xray.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    from search.cli import main

    capsys.readouterr()
    assert main(["pareto", str(res.output_dir), "--json", "--objectives", "ap,latency_ms"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["clean"]["objectives"] == ["ap", "latency_ms"]
    assert main(["pareto", str(res.output_dir), "--objectives", "speed"]) == 2
    err = capsys.readouterr().err
    assert "--objectives" in err and "speed" in err
    assert main(["report", str(res.output_dir)]) == 0


def _wandb_records(run_dir: str) -> list[dict[str, Any]]:
    """The records of an offline run, decoded by the wandb CLI (what `wandb sync` would upload)."""
    f = glob.glob(os.path.join(run_dir, "*.wandb"))[0]
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", f],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _run_of(recs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(next(r["run"] for r in recs if r.get("type") == "run"))


def _history(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r["history"]["item"]) for r in recs if r.get("type") == "history"]


def test_wandb_live_runs_read_back(sweep: tuple[SweepConfig, SweepResult]) -> None:
    from search.results.store import ResultStore

    cfg, res = sweep
    runs = sorted(glob.glob(str(res.output_dir / "wandb" / "wandb" / "offline-run-*")))
    trial_dirs = [r for r in runs if not r.endswith("-summary")]
    summary_dirs = [r for r in runs if r.endswith("-summary")]
    assert len(trial_dirs) == len(res.trials) == 12 and len(summary_dirs) == 1  # one run per trial
    ledger = json.loads((res.output_dir / "wandb" / "logged.json").read_text())
    assert sorted(ledger) == sorted(res.trials.trial_id)

    inter = ResultStore(res.output_dir / "results").intermediate()
    by_id = res.trials.set_index("trial_id")
    for d in trial_dirs:
        recs = _wandb_records(d)
        run = _run_of(recs)
        tid = run["display_name"]
        assert run["run_group"] == res.sweep_id and run["job_type"] == "trial"
        config = run["config"]["update"]
        assert (
            config["lr"] == pytest.approx(by_id.loc[tid, "lr"])
            and config["domain"] == by_id.loc[tid, "domain"]
        )
        assert config["method"] == by_id.loc[tid, "method"]
        # history: the AP reported at each intermediate iteration, live, with step = iteration
        hist = _history(recs)
        want = inter[inter.trial_id == tid].sort_values("iteration")
        assert [h["_step"] for h in hist] == want.iteration.tolist()
        np.testing.assert_allclose([h["ap"] for h in hist], want.ap.to_numpy())
        final = {k: v for r in recs if r.get("type") == "summary" for k, v in r["summary"]["update"].items()}
        assert final["status"] == by_id.loc[tid, "status"]

    recs = _wandb_records(summary_dirs[0])
    assert _run_of(recs)["job_type"] == "summary"
    hist = _history(recs)
    # live: after every finished trial of a domain, its hypervolume so far (non-decreasing)
    live = [h["live/hypervolume/clean"] for h in hist if "live/hypervolume/clean" in h]
    assert len(live) >= 2 and np.all(np.diff(live) >= -1e-12)
    assert [h["live/trials_finished/clean"] for h in hist if "live/trials_finished/clean" in h] == list(
        range(1, 7)
    )
    # end of sweep: hypervolume over trials with the final reference point, the Pareto table, plots
    over = [h["hypervolume_over_trials/xray"] for h in hist if "hypervolume_over_trials/xray" in h]
    fronts = json.loads((res.output_dir / "fronts.json").read_text())
    assert len(over) == 6 and over[-1] == pytest.approx(fronts["xray"]["hypervolume"])
    tables = glob.glob(os.path.join(summary_dirs[0], "files", "media", "table", "*.table.json"))
    table = json.loads(Path(tables[0]).read_text())
    assert {r[1] for r in table["data"]} == {r["trial_id"] for d in fronts.values() for r in d["front"]}
    assert glob.glob(os.path.join(summary_dirs[0], "files", "media", "images", "plots", "front-clean_*.png"))
    for path in Path(res.output_dir / "wandb").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes() and b"hunter2" not in path.read_bytes(), path


def test_wandb_backfills_trials_whose_run_was_lost(sweep: tuple[SweepConfig, SweepResult]) -> None:
    """A driver killed between a trial's end and its W&B run: the next finish writes that run only."""
    from search.results.wandb_log import log_sweep

    cfg, res = sweep
    ledger_path = res.output_dir / "wandb" / "logged.json"
    ledger = json.loads(ledger_path.read_text())
    lost = sorted(ledger)[0]
    ledger_path.write_text(json.dumps([t for t in ledger if t != lost]))
    ids = log_sweep(res.output_dir, cfg)
    assert ids == [f"{res.sweep_id}-{lost}", f"{res.sweep_id}-summary"]
    assert sorted(json.loads(ledger_path.read_text())) == sorted(ledger)
    assert log_sweep(res.output_dir, cfg) == [f"{res.sweep_id}-summary"]  # nothing left to backfill
    runs = glob.glob(str(res.output_dir / "wandb" / "wandb" / f"offline-run-*-{res.sweep_id}-{lost}"))
    assert len(runs) == 2
    newest = max(runs, key=os.path.getmtime)
    hist = _history(_wandb_records(newest))
    from search.results.store import ResultStore

    inter = ResultStore(res.output_dir / "results").intermediate()
    assert [h["_step"] for h in hist] == inter[inter.trial_id == lost].sort_values(
        "iteration"
    ).iteration.tolist()


def test_wandb_failure_never_stops_the_sweep_and_report_writes_the_runs_later(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wandb

    from search.cli import main

    cfg = synthetic_config(
        tmp_path / "out",
        domains=["clean"],
        constraints=[],
        budget={"trials": 3, "concurrency": 2, "max_failures": 1},
        sampler={"name": "random", "seed": 0},
        early_stopping={"enabled": False},
        wandb={"enabled": True, "mode": "offline"},
    )
    real_init = wandb.init

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("wandb: network is unreachable")

    monkeypatch.setattr(wandb, "init", no_network)
    res = run_sweep(cfg, quiet=True, report=False)
    assert len(res.trials) == 3 and set(res.trials.status) == {"completed"}
    assert not (res.output_dir / "wandb" / "wandb").exists()  # nothing half-written

    monkeypatch.setattr(wandb, "init", real_init)
    capsys.readouterr()
    assert main(["report", str(res.output_dir), "--wandb"]) == 0
    assert "wrote 3 trial run(s) and the summary run" in capsys.readouterr().out
    runs = glob.glob(str(res.output_dir / "wandb" / "wandb" / "offline-run-*"))
    assert len(runs) == 4
    assert sorted(json.loads((res.output_dir / "wandb" / "logged.json").read_text())) == sorted(
        res.trials.trial_id
    )


def test_run_refuses_an_existing_sweep_folder(sweep: tuple[SweepConfig, SweepResult], tmp_path: Path) -> None:
    from models.errors import UserError
    from search.cli import main

    cfg, res = sweep
    with pytest.raises(UserError, match="already holds a sweep; use 'peftsweep resume"):
        run_sweep(cfg)
    assert main(["resume", str(tmp_path)]) == 2  # not a sweep folder: one-line error, exit 2


def test_failing_trials_are_recorded_as_failed(ray_session: None, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    cfg = synthetic_config(
        tmp_path / "out",
        domains=["clean"],
        space={"methods": ["lora", "class_mask"], "iterations": [20]},
        constraints=[],
        budget={"trials": 4, "concurrency": 2, "max_failures": 1},
        sampler={"name": "random", "seed": 0},
        early_stopping={"enabled": False},
        trial={"function": "synthetic_trial:prepare", "eval_every": 10, "extra": {"fail_on": "class_mask"}},
    )
    cfg = cfg.model_copy(
        update={"sampler": cfg.sampler.model_copy(update={"storage": f"sqlite:///{tmp_path}/optuna.db"})}
    )
    res = run_sweep(cfg, quiet=True, report=False)
    df = res.trials
    assert len(df) == 4 and df.trial_id.is_unique
    assert set(df.status) <= {"completed", "failed"}
    failed = df[df.method == "class_mask"]
    assert len(failed) >= 1 and (failed.status == "failed").all()
    assert failed.error.str.contains("synthetic failure").all()
    assert (df[df.method == "lora"].status == "completed").all()
    import optuna

    study = optuna.load_study(
        study_name=f"{res.sweep_id}-clean", storage=f"sqlite:///{tmp_path}/optuna.db"
    )  # sampler.storage: a database URL instead of the journal file
    states = {t.user_attrs["tune_trial_id"]: t.state for t in study.trials}
    for tid in failed.trial_id:
        assert states[tid] == TrialState.FAIL
