"""A point the study has trained is not trained again (search.engine.repeats)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search.config import SearchSpaceConfig
from search.engine.repeats import MAX_REPEAT_ASKS, REPEAT_ATTR, Repeat, RepeatIndex, point_key
from search.engine.samplers import make_searcher
from search.engine.space import SearchSpace, grid_points

optuna.logging.set_verbosity(optuna.logging.WARNING)

OBJ = ["ap", "trainable_pct", "latency_ms"]
MODES = ["max", "min", "min"]
# 3 head baselines x 2 learning rates + LoRA 2 ranks x 2 learning rates = 10 points.
SPACE = SearchSpaceConfig.model_validate(
    {
        "methods": ["full_head", "class_mask", "decoder_only", "lora"],
        "lora": {"rank": [4, 8], "alpha": [8.0], "targets": [["msda"]]},
        "lr_grid": [1e-3, 3e-3],
        "iterations": [40],
    }
)


def _values(p: Mapping[str, Any]) -> list[float]:
    """One head baseline is far better than anything else: the sampler wants it again and again."""
    ap = 50.0 if p["method"] == "class_mask" and p["lr"] == 3e-3 else 20.0 + 10 * p["lr"] * 100
    pct = {"full_head": 30.0, "class_mask": 1.0, "decoder_only": 20.0}.get(p["method"], 3.0)
    return [ap, pct, 10.0]


def _result(p: Mapping[str, Any]) -> dict[str, Any]:
    return {"final": True, "status": "completed", **dict(zip(OBJ, _values(p)))}


def test_space_size_counts_the_distinct_points() -> None:
    points = SearchSpace(SPACE).points()
    assert points is not None and len(points) == 10 == len(grid_points(SPACE, [1e-3, 3e-3]))
    continuous = SPACE.model_copy(update={"lr_grid": None})
    assert SearchSpace(continuous).points() is None  # a continuous lr: no two proposals are equal


def test_point_key_ignores_inactive_nan_and_int_float_spelling() -> None:
    a = point_key({"method": "lora", "lora_rank": 8, "lr": 0.001, "adapter_repetitions": float("nan")})
    b = point_key({"lr": 1e-3, "lora_rank": 8.0, "method": "lora"})
    assert a == b
    assert a != point_key({"method": "lora", "lora_rank": 4, "lr": 0.001})


def test_index_answers_trained_running_and_exhausted() -> None:
    points = [{"method": m} for m in ("a", "b", "c")]
    idx = RepeatIndex(points, constraint_metrics=["trainable_pct"])
    k1, k2, k3 = (point_key(p) for p in points)
    idx.add_values(k1, 0, [1.0, 2.0], {"trainable_pct": 2.0, "other": 5})
    assert idx.check(k1, {}) == Repeat(0, (1.0, 2.0), (("trainable_pct", 2.0),))
    assert idx.check(k2, {k2: 4}) == Repeat(4, None)  # still training: values unknown
    assert idx.check(k2, {}) is None  # new
    assert idx.untried({k2: 4}) == [k3]
    # every point trained or running: nothing new is left, a repeat trains
    assert idx.check(k1, {k2: 4, k3: 5}) is None


def test_a_sampler_stuck_on_known_points_gets_an_untried_one() -> None:
    """After MAX_REPEAT_ASKS repeats in a row the next ask is an untried point (enqueued)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [{"method": "lora", "lora_rank": r} for r in (4, 8, 16)]
    idx = RepeatIndex(points)
    dists = {
        "method": optuna.distributions.CategoricalDistribution(["lora"]),
        "lora_rank": optuna.distributions.CategoricalDistribution([4, 8, 16]),
    }
    first = study.ask(dists)
    study.tell(first, 1.0)
    idx.add_values(point_key(first.params), first.number, [1.0], {})
    known = point_key(first.params)
    for i in range(MAX_REPEAT_ASKS):
        t = study.ask(dists)
        assert idx.screen(study, t, known, {}, i)  # the stuck sampler proposes `known` again
    nxt = study.ask(dists)  # the enqueued untried point
    assert point_key(nxt.params) in idx.untried({}) and point_key(nxt.params) != known
    assert idx.repeats == MAX_REPEAT_ASKS


def _sweep(sampler: str, seed: int, trials: int, concurrency: int = 1) -> tuple[list[dict[str, Any]], Any]:
    s = make_searcher(sampler, seed, SPACE, OBJ, MODES, startup_trials=2)
    running: list[tuple[str, dict[str, Any]]] = []
    trained: list[dict[str, Any]] = []
    for i in range(trials):
        cfg = s.suggest(f"t{i}")
        assert cfg is not None
        running.append((f"t{i}", cfg))
        if len(running) >= concurrency:
            tid, done = running.pop(0)
            s.on_trial_complete(tid, _result(done))
        trained.append(cfg)
    for tid, done in running:
        s.on_trial_complete(tid, _result(done))
    return trained, s


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_point_is_trained_twice_until_the_space_is_exhausted(sampler: str, concurrency: int) -> None:
    trained, s = _sweep(sampler, 0, 10, concurrency)
    keys = Counter(point_key(c) for c in trained)
    assert len(keys) == 10, keys  # 10 trials cover the 10-point space exactly
    study = s._ot_study
    repeats = [t for t in study.get_trials(deepcopy=False) if REPEAT_ATTR in t.user_attrs]
    assert len(repeats) == s.repeats
    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
    for t in repeats:
        original = numbers[t.user_attrs[REPEAT_ATTR]]
        assert point_key(s._active(t.params)) == point_key(s._active(original.params))
        if t.state == TrialState.COMPLETE:  # a repeat of a trained point carries its values
            assert t.values == original.values
        else:  # a repeat of a running point: FAIL, which no sampler models
            assert t.state == TrialState.FAIL
    # Exhausted: the next trials repeat points (nothing new is left) instead of spinning.
    more, _ = _sweep(sampler, 0, 13, concurrency)
    assert len(more) == 13 and len({point_key(c) for c in more}) == 10


def test_tpe_repeats_the_best_head_without_the_filter_and_not_with_it() -> None:
    """Why the filter exists: TPE proposes the best single-configuration baseline again and again."""
    s = make_searcher("tpe", 0, SPACE, OBJ, MODES, startup_trials=2)
    s._skip_repeats = False
    counts: Counter[tuple[Any, ...]] = Counter()
    for i in range(10):
        cfg = s.suggest(f"t{i}")
        assert cfg is not None
        s.on_trial_complete(f"t{i}", _result(cfg))
        counts[point_key(cfg)] += 1
    assert max(counts.values()) >= 2  # the unfiltered sampler trains some point twice
    trained, _ = _sweep("tpe", 0, 10)
    assert max(Counter(point_key(c) for c in trained).values()) == 1


def test_a_searcher_on_a_restored_study_knows_the_trained_points() -> None:
    """A searcher built again on the sweep's study (resume from the journal) does not retrain what
    the study holds."""
    storage = optuna.storages.InMemoryStorage()
    trained, s = _sweep("tpe", 0, 6)
    # copy the six trained trials into a study on `storage`, as a resumed sweep finds them
    study = optuna.create_study(
        study_name="s", storage=storage, directions=["maximize", "minimize", "minimize"]
    )
    for t in s._ot_study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and REPEAT_ATTR not in t.user_attrs:
            study.add_trial(t)
    again = make_searcher("tpe", 1, SPACE, OBJ, MODES)
    again._ot_study = optuna.load_study(study_name="s", storage=storage, sampler=again._sampler)
    new = [again.suggest(f"n{i}") for i in range(4)]
    seen = {point_key(c) for c in trained}
    assert all(c is not None and point_key(c) not in seen for c in new), new


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_point_stopped_early_is_not_trained_again(sampler: str) -> None:
    """MO-ASHA's decision stands: a point it stopped is known (told PRUNED again, no slot). Before,
    TPE re-proposed good-looking stopped points and trained them again."""
    s = make_searcher(sampler, 0, SPACE, OBJ, MODES, startup_trials=2)
    trained = []
    for i in range(10):
        cfg = s.suggest(f"t{i}")
        assert cfg is not None
        trained.append(point_key(cfg))
        stopped = cfg["method"] == "lora" or cfg["lr"] == 3e-3  # half the space stops at a rung
        s.on_trial_complete(
            f"t{i}", {"final": False, "status": "running", "ap": 1.0} if stopped else _result(cfg)
        )
    assert len(set(trained)) == 10  # the 10-point space is covered, no stopped point retrained
    study = s._ot_study
    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
    pruned_repeats = [
        t
        for t in study.get_trials(deepcopy=False)
        if REPEAT_ATTR in t.user_attrs and t.state == TrialState.PRUNED
    ]
    for t in pruned_repeats:  # each repeats a stopped original, in the original's state
        assert numbers[t.user_attrs[REPEAT_ATTR]].state == TrialState.PRUNED
    if sampler == "tpe":
        assert pruned_repeats  # TPE does propose stopped points again: the filter caught them


def test_index_restored_from_a_study_knows_the_stopped_points() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dists = {"method": optuna.distributions.CategoricalDistribution(["a", "b"])}
    t = study.ask(dists)
    study.tell(t, state=TrialState.PRUNED)
    idx = RepeatIndex([{"method": "a"}, {"method": "b"}])
    idx.sync(study, lambda p: p)
    assert idx.check(point_key(t.params), {}) == Repeat(t.number, None, pruned=True)


def test_a_slow_sampler_gets_the_untried_point_after_fewer_repeats() -> None:
    """GP's asks cost seconds: its searcher gives up on repeats after REPEAT_ASKS["gp"] of them."""
    from search.engine.samplers import REPEAT_ASKS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [{"method": "lora", "lora_rank": r} for r in (4, 8, 16)]
    idx = RepeatIndex(points, max_asks=REPEAT_ASKS["gp"])
    dists = {"lora_rank": optuna.distributions.CategoricalDistribution([4, 8, 16])}
    first = study.ask(dists)
    study.tell(first, 1.0)
    known = point_key({"method": "lora", "lora_rank": first.params["lora_rank"]})
    idx.add_values(known, first.number, [1.0], {})
    for i in range(REPEAT_ASKS["gp"]):
        assert idx.screen(study, study.ask(dists), known, {}, i)
    assert study.ask(dists).params["lora_rank"] != first.params["lora_rank"]  # the enqueued untried point
    gp = make_searcher("gp", 0, SPACE, OBJ, MODES)
    assert gp._max_repeat_asks == REPEAT_ASKS["gp"] < MAX_REPEAT_ASKS
    assert make_searcher("tpe", 0, SPACE, OBJ, MODES)._max_repeat_asks == MAX_REPEAT_ASKS
