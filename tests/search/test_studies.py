"""The study multiplexer: fair share of slots, hand-over of a finished study's slots, total budget,
and a checkpoint that restores each study's Optuna history from its JournalStorage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from search.config import SearchSpaceConfig
from search.engine.studies import STUDY_KEY, SearcherFactory, StudyMux, StudySpec, fair_pick


class _Counter(Searcher):
    """A per-study searcher that hands out numbered configs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.n = 0
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict[str, Any]:
        self.n += 1
        return {"i": self.n}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append(trial_id)


def _mux(budgets: dict[str, int], concurrency: int, total: int | None = None) -> StudyMux:
    specs = [StudySpec(n, "m", n, b, i) for i, (n, b) in enumerate(budgets.items())]
    return StudyMux(
        specs, lambda spec, resume: _Counter(spec.name), concurrency=concurrency, total_trials=total
    )


def test_fair_pick_follows_remaining_budgets() -> None:
    assert fair_pick({"a": 30, "b": 10}, {"a": 0, "b": 0}, 4) == "a"
    assert fair_pick({"a": 30, "b": 10}, {"a": 3, "b": 0}, 4) == "b"  # b's share is 1 slot
    assert fair_pick({"a": 0, "b": 10}, {"a": 3, "b": 3}, 4) == "b"
    assert fair_pick({"a": 0, "b": 0}, {}, 4) is None


def test_slots_are_shared_by_remaining_budget_and_a_finished_studys_slots_pass_on() -> None:
    mux = _mux({"a": 30, "b": 10}, concurrency=4)
    first = [mux.suggest(f"t{i}") for i in range(4)]
    assert sorted(c[STUDY_KEY] for c in first) == ["a", "a", "a", "b"]  # shares 3 : 1

    mux = _mux({"a": 2, "b": 10}, concurrency=4)
    live: dict[str, str] = {}
    for i in range(4):
        live[f"t{i}"] = mux.suggest(f"t{i}")[STUDY_KEY]
    assert sorted(live.values()) == ["a", "b", "b", "b"]  # shares 2 : 10 of 4 slots
    k = 4
    done_a: list[str] = []
    while mux.remaining()["a"] or mux.live["a"]:
        tid = next(t for t, s in live.items() if s == "a")  # a's running trial ends ...
        del live[tid]
        done_a.append(tid)
        mux.on_trial_complete(tid, {"final": True})
        live[f"t{k}"] = mux.suggest(f"t{k}")[STUDY_KEY]  # ... and its slot is refilled at once
        k += 1
    # a ran its whole budget one at a time; its slot then went to b at the next ask.
    assert len(done_a) == 2 and list(live.values())[-1] == "b"
    assert {n: len(v) for n, v in mux.live.items()} == {"a": 0, "b": 4}
    assert mux.study_searcher("a").completed == done_a


def test_total_budget_and_exhausted_studies_finish_the_search() -> None:
    mux = _mux({"a": 5, "b": 5}, concurrency=10, total=6)
    got = [mux.suggest(f"t{i}") for i in range(7)]
    assert all(isinstance(c, dict) for c in got[:6]) and got[6] == Searcher.FINISHED
    assert sum(mux.started.values()) == 6

    mux = _mux({"a": 1, "b": 1}, concurrency=2)
    assert isinstance(mux.suggest("x"), dict) and isinstance(mux.suggest("y"), dict)
    assert mux.suggest("z") == Searcher.FINISHED


def _factory(tmp_path: Path, seed: int = 0) -> SearcherFactory:
    return SearcherFactory(
        sweep_id="sw",
        space=SearchSpaceConfig(methods=["lora", "adapter"], iterations=[10]),
        metrics=["ap", "trainable_pct"],
        modes=["max", "min"],
        sampler="tpe",
        seed=seed,
        population_size=4,
        startup_trials=2,
        constraints=[],
        initial_points=[{"method": "lora", "lora_rank": 8, "lora_alpha": 8.0, "lr": 1e-3, "iterations": 10}],
        storage_url=str(tmp_path / "optuna" / "journal.log"),
    )


def _final(ap: float) -> dict[str, Any]:
    return {"final": True, "status": "completed", "ap": ap, "trainable_pct": 1.0}


def test_checkpoint_restores_each_study_from_its_journal(tmp_path: Path) -> None:
    specs = [StudySpec("clean", "m", "clean", 4, 0), StudySpec("xray", "m", "xray", 4, 1)]
    mux = StudyMux(specs, _factory(tmp_path), concurrency=4)
    cfgs = {f"t{i}": mux.suggest(f"t{i}") for i in range(4)}
    # the initial point is tried first in every study
    firsts = {c[STUDY_KEY]: c for c in list(cfgs.values())[::-1]}
    assert all(c["method"] == "lora" and c["lora_rank"] == 8 for c in firsts.values())
    mux.on_trial_complete("t0", _final(0.5))
    mux.on_trial_complete("t1", None, error=True)
    ckpt = tmp_path / "searcher.pkl"
    mux.save(str(ckpt))

    # A new process: the pickled mux (as Tune restores it) plus the checkpoint.
    import pickle

    again = pickle.loads(pickle.dumps(StudyMux(specs, _factory(tmp_path), concurrency=4)))
    again.restore(str(ckpt))
    again.on_trial_complete("t2", {"final": False, "iteration": 5})  # stopped by MO-ASHA: PRUNED
    assert again.started == mux.started and again.owner == mux.owner
    cfg = again.suggest("t9")  # not the initial point again: the journal already holds it
    assert isinstance(cfg, dict)
    # t3 belongs to no trial the restored experiment knows (a killed driver started it): FAIL.
    assert again.resolve_orphans({"t0", "t1", "t2", "t9"}) == 1

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna" / "journal.log"))
    )
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["sw-clean", "sw-xray"]
    states: dict[str, str] = {}
    for name in names:
        for t in optuna.load_study(study_name=name, storage=storage).trials:
            states[t.user_attrs.get("tune_trial_id", "?")] = t.state.name
    assert states == {"t0": "COMPLETE", "t1": "FAIL", "t2": "PRUNED", "t3": "FAIL", "t9": "RUNNING"}
    enqueued = [t for n in names for t in optuna.load_study(study_name=n, storage=storage).trials]
    assert len(enqueued) == 5  # 4 + t9: the restore enqueued no second initial point


def test_an_rdb_url_holds_the_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    factory = _factory(tmp_path)
    factory.storage_url = url
    mux = StudyMux([StudySpec("clean", "m", "clean", 2, 0)], factory, concurrency=1)
    mux.suggest("a")
    mux.on_trial_complete("a", _final(0.3))
    study = optuna.load_study(study_name="sw-clean", storage=url)
    assert [(t.state.name, t.values) for t in study.trials] == [("COMPLETE", [0.3, 1.0])]
