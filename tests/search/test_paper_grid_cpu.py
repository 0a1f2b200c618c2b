"""The CPU twin of the paper's grid runs end to end: 3 models x 4 synthetic domains = 12 studies in
one Tune run of real (tiny) model trials, one front and one journal study per (model, domain)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.config import load_config
from search.engine.runner import run_sweep

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "search" / "configs" / "paper_grid_cpu.yaml"


def test_paper_grid_cpu_twin_runs_every_study(ray_session: None, tmp_path: Path) -> None:
    cfg = load_config(CONFIG)
    # One trial per study keeps the test to a minute or two on 2 cores; the config's own budget is 2.
    cfg = cfg.model_copy(
        update={"output_dir": str(tmp_path / "out"), "budget": cfg.budget.model_copy(update={"trials": 1})}
    )
    res = run_sweep(cfg, quiet=True, report=False)
    df = res.trials
    studies = [s.name for s in cfg.studies()]
    assert len(studies) == 12
    assert sorted(df.study) == sorted(studies) and df.trial_id.is_unique
    assert set(df.status) <= {"completed", "pruned", "infeasible"}, df[["study", "status", "error"]]
    assert (df.status == "completed").any()
    # Real models: the two Mask DINO stand-ins share an architecture, SEEM's differs.
    params = df.groupby("model").total_params.first().to_dict()
    assert params["r50"] == params["swinl"] != params["focall"]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(res.output_dir / "optuna" / "journal.log"))
    )
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {f"{res.sweep_id}-{s}" for s in studies}
