"""``peftsweep bench select`` on small hand-made tables whose right answers are worked out by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from models.errors import UserError
from search.benchmarks import select as bench
from search.benchmarks.select_grid import ID_COLUMNS
from search.selection.candidates import candidate_points
from search.selection.decision import Budgets
from search.selection.warmstart import WarmPoint, history_points, pilot_matrix

LR = 3e-3
PILOT = "lora:4,lora:8,adapter:2,adapter:3,full_head"
# label -> (final AP, trainable %, latency ms); the AP curve is 0.5x / 0.8x / 1x of it at 20/40/80.
NEAR = {
    "lora:4": (20.0, 3.8, 11.3),
    "lora:8": (21.0, 4.7, 11.3),
    "adapter:2": (22.0, 5.3, 12.0),
    "adapter:3": (22.5, 6.4, 12.4),
    "full_head": (23.0, 57.0, 11.3),
    "class_mask": (10.0, 1.76, 11.3),
}
FRACTION = {20: 0.5, 40: 0.8, 60: 0.9, 80: 1.0}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_domain(
    tables: Path, domain: str, spec: dict[str, tuple[float, float, float]], untrained: float
) -> None:
    rows, curves = [], []
    for item, (ap, pct, lat) in spec.items():
        p = pilot_matrix(item, lr=LR, iterations=80)[0]
        params = {c: p.get(c, "") for c in ID_COLUMNS + ("iterations",)}
        rows.append(
            {
                **params,
                "ap": ap,
                "ap_sd": 1.0,
                "trainable_params": int(pct * 1e4),
                "trainable_pct": pct,
                "latency_ms": lat,
                "status": "completed",
            }
        )
        for it, f in FRACTION.items():
            curves.append(
                {**params, "domain": domain, "seed": 0, "iteration": it, "ap": ap * f, "status": "completed"}
            )
    _write(tables / f"select_{domain}.csv", rows)
    _write(tables / f"select_{domain}.curves.csv", curves)
    (tables / f"select_{domain}.json").write_text(json.dumps({"untrained_ap": {"0": untrained}}))


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    write_domain(tmp_path, "near", NEAR, untrained=2.0)
    # 'far' prefers adapters x3 clearly; 'dead' learned nothing (AP ~0.1 everywhere).
    far = {k: (v[0] - 8.0 if k.startswith("lora") else v[0], v[1], v[2]) for k, v in NEAR.items()}
    write_domain(tmp_path, "far", far, untrained=1.0)
    write_domain(tmp_path, "dead", {k: (0.1, v[1], v[2]) for k, v in NEAR.items()}, untrained=0.1)
    frechet = {
        "near": {"far": 2.0, "dead": 5.0},
        "far": {"near": 2.0, "dead": 4.0},
        "dead": {"near": 5.0, "far": 4.0},
        "source": {"near": 1.0, "far": 3.0, "dead": 6.0},
    }
    (tmp_path / "select_domains.json").write_text(json.dumps({"frechet": frechet}))
    return tmp_path


def test_select_regret_and_compute_match_the_hand_computation(tables: Path) -> None:
    grid = bench.load_grid("near", tables)
    out = bench.replay_select(grid, 0, bench.Scenario("no budget"), pilot=PILOT, lrs=[LR])
    # Rung 20: full head 11.5, adapter x3 11.25, adapter x2 11.0 continue (ceil(5/2) = 3);
    # rung 40: full head 18.4, adapter x3 18.0; at 80 the decision needs 0.9 x 23 = 20.7 AP and
    # takes the cheaper of the two: adapter x3 (22.5). Best feasible: full head, 23.0.
    assert out.picked == "adapter x3 lr 0.003"
    assert out.best_ap == 23.0 and out.picked_ap == 22.5
    assert out.regret == pytest.approx(0.5) and out.regret_pct == pytest.approx(100 * 0.5 / 23)
    # 5 x 20 + 3 x (40 - 20) + 2 x (80 - 40) trial-iterations of a 6-configuration grid's 6 x 80.
    assert out.compute_pct == pytest.approx(100 * 240 / 480)
    # ... and of a full sweep of the search grid's 153 configurations at the grid's 80 iterations.
    assert out.compute_full_pct == pytest.approx(100 * 240 / (153 * 80))


def test_budgets_bound_the_truth_and_the_rules(tables: Path) -> None:
    grid = bench.load_grid("near", tables)
    five = bench.Scenario("params <= 5 %", param_budget_pct=5.0)
    sel = bench.replay_select(grid, 0, five, pilot=PILOT, lrs=[LR])
    # Within 5 %: LoRA r4 (20), r8 (21), class+mask (10): the best feasible is LoRA r8.
    assert sel.best_ap == 21.0 and sel.best_label == "lora r8 lr 0.003"
    assert sel.picked_ap <= 21.0 and sel.regret >= 0
    head = bench.rule_outcome(grid, "always full head", five)
    assert head.note == "outside the budgets" and head.regret == 21.0 and head.regret_pct == 100.0
    lora = bench.rule_outcome(grid, "always LoRA r8", bench.Scenario("no budget"))
    assert lora.picked_ap == 21.0 and lora.regret == pytest.approx(2.0)
    assert lora.compute_pct == pytest.approx(100 / 6)


def test_nothing_learned_is_no_pick_scored_as_the_untrained_model(tables: Path) -> None:
    out = bench.replay_select(
        bench.load_grid("dead", tables), 0, bench.Scenario("no budget"), pilot=PILOT, lrs=[LR]
    )
    # Exit 4: nothing adapted; the user keeps the base + new head, whose AP (0.1) is the grid's best.
    assert out.picked == bench.UNTRAINED and out.note.startswith("nothing learned")
    assert out.picked_ap == pytest.approx(0.1) and out.regret == pytest.approx(0.0)
    near = bench.load_grid("near", tables)
    near.untrained_ap = {0: 2.0}
    # On 'near' select learns (so no exit 4); had it exited, 2.0 of 23.0 would be kept.
    assert (
        bench.replay_select(near, 0, bench.Scenario("no budget"), pilot=PILOT, lrs=[LR]).picked
        != bench.UNTRAINED
    )


def test_warm_start_queues_the_nearest_domains_pick_first(tables: Path) -> None:
    grids = {d: bench.load_grid(d, tables) for d in ("near", "far", "dead")}
    dist = bench.load_distances(tables)
    warm = bench.warm_points("near", grids, dist, Budgets(), k=1)
    # On 'far' (nearest to 'near') the rule picks adapters x2 (22.0: the cheapest within
    # 0.9 x 23.0); its best-AP configuration is the full head.
    assert [(w.origin, w.params["method"], w.params.get("adapter_repetitions")) for w in warm] == [
        ("neighbour far", "adapter", 2),
        ("neighbour far", "full_head", None),
    ]
    queue = candidate_points(PILOT, [LR], 80, warm=warm)
    assert [w.origin for w in queue[:2]] == ["neighbour far"] * 2
    assert len(queue) == 5  # the pilot's copies of the two warm points are dropped


def test_history_points_skip_empty_domains() -> None:
    rows = [
        {
            "method": "full_head",
            "lr": LR,
            "iterations": 80,
            "ap": 5.0,
            "trainable_params": 9,
            "trainable_pct": 50.0,
            "latency_ms": 1.0,
            "status": "completed",
        }
    ]
    pts = history_points([(2.0, "b", rows), (1.0, "a", [])], Budgets())
    assert [w.origin for w in pts] == ["neighbour b"]
    assert isinstance(pts[0], WarmPoint) and pts[0].distance == 2.0


def test_family_best_and_paper_finding(tables: Path) -> None:
    res = bench.run_bench(tables, ("near", "far", "dead"))
    fam = res["families"]
    assert fam["near"]["adapters"]["ap"] == 22.5 and fam["near"]["LoRA"]["ap"] == 21.0
    assert fam["far"]["LoRA"]["ap"] == 13.0 and fam["far"]["partial heads"]["ap"] == 10.0
    lines = bench.format_bench(res)
    text = "\n".join(lines)
    assert "target (select):" in text and "always adapters x2" in text
    finding = bench.paper_finding(res)[0]
    # near: adapters lead LoRA by 1.5 AP, more than the combined seed sd sqrt(2) = 1.41.
    assert "within noise of adapters: no" in finding
    assert all(math.isfinite(o["compute_pct"]) for o in res["outcomes"])


def test_a_grid_still_recording_leaves_its_missing_points_out(tmp_path: Path) -> None:
    write_domain(tmp_path, "part", {k: v for k, v in NEAR.items() if k != "full_head"}, untrained=2.0)
    grid = bench.load_grid("part", tmp_path)
    out = bench.replay_select(grid, 0, bench.Scenario("no budget"), pilot=PILOT, lrs=[LR])
    assert "left out: full_head lr 0.003" in out.note and out.picked is not None
    assert bench.rule_outcome(grid, "always full head", bench.Scenario("no budget")).note == "not recorded"


def test_bench_progress_counts_every_replay_and_quiet_prints_nothing(
    tables: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.cli import main

    # The header states the machine's load average at replay time, which moves between the two
    # runs compared below (a CI failure): hold it still, everything else is the bench's own output.
    monkeypatch.setattr(bench, "_machine_and_load", lambda: "2 CPU cores, load average 1.0, 1.0, 1.0")
    domains = "near,far"
    assert main(["bench", "select", "--tables", str(tables), "--domains", domains]) == 0
    captured = capsys.readouterr()
    # 2 domains x 3 scenarios x (seeds x (cold, warm, cold 2 seeds, warm 2 seeds, cold with rungs by
    # AP, cold 2 seeds with the reference cut, 1- and 2-seed references) + 3 rules) replays, as
    # plain lines on stderr (captured: not a terminal), figures on stdout.
    seeds = len(bench.load_grid("near", tables).seeds)
    total = 2 * len(bench.SCENARIOS) * (8 * seeds + len(bench.RULES))
    assert f"bench select {total}/{total} (100%)" in captured.err and "\x1b" not in captured.err
    assert "bench select" not in captured.out and "== summary" in captured.out
    assert main(["bench", "select", "--tables", str(tables), "--domains", domains, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == captured.out


def _two_seed_domain(tables: Path) -> bench.DomainGrid:
    """'near' as seed 0; seed 1 the same except adapters x3 ends at 15.0 (its mean: 18.75)."""
    write_domain(tables, "twoseed", {**NEAR, "adapter:3": (18.75, 6.4, 12.4)}, untrained=2.0)
    path = tables / "select_twoseed.curves.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["method"] == "adapter" and r["adapter_repetitions"] == "3":
            r["ap"] = str(22.5 * FRACTION[int(r["iteration"])])  # seed 0 as in 'near'
    seed1 = [{**r, "seed": "1"} for r in rows]
    for r in seed1:
        if r["method"] == "adapter" and r["adapter_repetitions"] == "3" and r["iteration"] == "80":
            r["ap"] = "15.0"
    _write(path, rows + seed1)
    return bench.load_grid("twoseed", tables)


def test_extra_seeds_decide_on_the_mean_and_are_charged(tmp_path: Path) -> None:
    grid = _two_seed_domain(tmp_path)
    free = bench.Scenario("no budget")
    one = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR])
    # One seed: finalists full head (23.0) and adapters x3 (22.5 >= 0.9 x 23): the cheaper, x3,
    # whose true (mean) AP is 18.75.
    assert one.picked == "adapter x3 lr 0.003" and one.regret == pytest.approx(23.0 - 18.75)
    two = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR], seeds=2)
    # Two seeds: x3 averages (22.5 + 15) / 2 = 18.75 < 20.7, so the full head; 240 + 2 x 80 iterations.
    assert two.picked == "full_head lr 0.003" and two.regret == 0.0
    assert two.cost_iterations == 240 + 2 * 80 and one.cost_iterations == 240
    # Seed 1's pilot takes seed 0 as its extra seed (cyclically): the same mean, the same pick.
    assert bench.replay_select(grid, 1, free, pilot=PILOT, lrs=[LR], seeds=2).picked == "full_head lr 0.003"


def test_one_seed_whole_grid_reference_and_exit_3_closest(tmp_path: Path) -> None:
    grid = _two_seed_domain(tmp_path)
    ref = bench.whole_grid(grid, 0, bench.Scenario("no budget"))
    # Seed 0's final APs of all 6 configurations, the same rule: LoRA r8 (21 >= 0.9 x 23, the
    # cheapest such), which the halving pilot never took to the last rung; the whole grid's compute.
    assert ref.picked == "lora r8 lr 0.003" and ref.compute_pct == 100.0
    assert ref.regret == pytest.approx(2.0)
    five = bench.whole_grid(grid, 0, bench.Scenario("params <= 5 %", param_budget_pct=5.0))
    assert five.picked == "lora r8 lr 0.003" and five.note == ""
    # Within 4 %: only LoRA r4 (20.0 < 20.7) and class+mask: select exits 3 naming the closest,
    # LoRA r4, which fits the budget -- the method a user deploys, scored as such.
    four = bench.whole_grid(grid, 0, bench.Scenario("params <= 4 %", param_budget_pct=4.0))
    assert four.picked == "lora r4 lr 0.003" and four.note == "exit 3, its closest"
    assert four.best_ap == 20.0 and four.regret == 0.0


def test_whole_grid_reference_on_two_seeds_decides_on_their_mean(tmp_path: Path) -> None:
    grid = _two_seed_domain(tmp_path)
    ref = bench.whole_grid(grid, 0, bench.Scenario("no budget"), seeds=2)
    # Mean of seeds 0 and 1: adapters x3 18.75, the rest as seed 0; 0.9 x 23 = 20.7 -> the cheapest
    # above it, LoRA r8 (21.0). Two full runs of each of the 6 configurations.
    assert ref.strategy == "(2-seed whole grid)" and ref.picked == "lora r8 lr 0.003"
    assert ref.seen == (0, 1) and ref.cost_iterations == 2 * 6 * 80


def _recording(tables: Path, domain: str, seed: int, spec: dict[str, tuple[float, float, float]]) -> None:
    """``write_domain`` with its curves recorded as ``seed`` instead of 0."""
    write_domain(tables, domain, spec, untrained=2.0)
    path = tables / f"select_{domain}.curves.csv"
    with open(path, newline="") as fh:
        rows = [{**r, "seed": str(seed)} for r in csv.DictReader(fh)]
    _write(path, rows)
    (tables / f"select_{domain}.json").write_text(
        json.dumps({"untrained_ap": {str(seed): 2.0}, "record_minutes": 1.5, "date": f"day {seed}"})
    )


def test_pooled_recordings_and_a_truth_the_pick_never_saw(tmp_path: Path) -> None:
    """Two recordings of one grid on seeds 0 and 1 pool into one two-seed grid; with --truth unseen
    a pick decided on seed 0 is scored on seed 1 alone."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _recording(tmp_path / "a", "near", 0, NEAR)
    _recording(tmp_path / "b", "near", 1, {**NEAR, "adapter:3": (15.0, 6.4, 12.4)})
    grid = bench.pool_grids([bench.load_grid("near", tmp_path / d) for d in ("a", "b")])
    assert grid.seeds == [0, 1] and grid.untrained_ap == {0: 2.0, 1: 2.0}
    x3 = grid.row(pilot_matrix("adapter:3", lr=LR, iterations=80)[0])
    assert x3 is not None and x3["ap"] == pytest.approx(18.75) and x3["seeds"] == 2
    assert x3["ap_sd"] == pytest.approx(abs(22.5 - 15.0) / 2**0.5)
    assert grid.sidecar["record_minutes"] == 3.0 and grid.sidecar["date"] == "day 0, day 1"
    free = bench.Scenario("no budget")
    # Seed 0's pilot picks adapters x3 (22.5 there, see the hand computation above).
    mean = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR])
    unseen = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR], truth="unseen")
    assert mean.picked == unseen.picked == "adapter x3 lr 0.003" and unseen.seen == (0,)
    assert mean.regret == pytest.approx(23.0 - 18.75)  # the mean of both seeds, seed 0's luck included
    assert unseen.regret == pytest.approx(23.0 - 15.0)  # seed 1 only
    # A two-seed pick has no unseen seed left here: a one-line error that says what to do.
    with pytest.raises(UserError, match="--truth unseen: near records no seed beyond the 2"):
        bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR], seeds=2, truth="unseen")


def test_pooling_refuses_overlapping_seeds_and_other_grids(tmp_path: Path) -> None:
    for d, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / d).mkdir()
        spec = NEAR if d != "c" else {k: v for k, v in NEAR.items() if k != "class_mask"}
        _recording(tmp_path / d, "near", seed, spec)
    a, b, c = (bench.load_grid("near", tmp_path / d) for d in "abc")
    with pytest.raises(
        UserError, match=r"--tables: .*b/select_near.csv and an earlier table both record seed\(s\) \[0\]"
    ):
        bench.pool_grids([a, b])
    with pytest.raises(UserError, match=r"--tables: .*c/select_near.csv records other configurations"):
        bench.pool_grids([a, c])


def test_cli_pools_tables_and_scores_on_unseen_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.cli import main

    for d, seed in (("a", 0), ("b", 1), ("c", 2)):
        (tmp_path / d).mkdir()
        _recording(tmp_path / d, "near", seed, NEAR)
    args = ["bench", "select", "--domains", "near", "--quiet", "--truth", "unseen"]
    assert (
        main(
            [
                *args,
                "--tables",
                str(tmp_path / "a"),
                "--tables",
                str(tmp_path / "b"),
                "--tables",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "truth: each pick is scored on the recorded seeds it did not train on" in out
    assert "recorded seeds: near [0, 1, 2]" in out and "(2-seed whole grid)" in out
    # One recording of one seed cannot score a pick on a seed it did not see.
    assert main([*args, "--tables", str(tmp_path / "a")]) != 0
    assert "--truth unseen: near records no seed beyond" in capsys.readouterr().err


def test_truth_noise_is_the_standard_error_of_the_difference(tables: Path) -> None:
    grid = bench.load_grid("near", tables)
    out = bench.replay_select(grid, 0, bench.Scenario("no budget"), pilot=PILOT, lrs=[LR])
    # adapters x3 (22.5) vs the full head (23.0), each sd 1.0 over 1 seed: se = sqrt(1 + 1).
    noise = bench._truth_noise(grid, out)
    assert noise["truth_se"] == pytest.approx(2**0.5) and noise["within_noise"] is True
    lora = bench.rule_outcome(grid, "always LoRA r8", bench.Scenario("no budget"))
    assert bench._truth_noise(grid, lora)["within_noise"] is False  # 2.0 > 1.41
    head = bench.rule_outcome(grid, "always full head", bench.Scenario("no budget"))
    assert bench._truth_noise(grid, head) == {"truth_se": 0.0, "within_noise": True}


def test_spearman_matches_scipy_and_rung_agreement_by_hand(tables: Path) -> None:
    stats = pytest.importorskip("scipy.stats")
    a = [3.0, 1.0, 2.0, 2.0, 5.0, 0.5]
    b = [2.0, 0.0, 1.0, 3.0, 4.0, 4.0]
    assert bench.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert bench.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(bench.spearman([1.0, 1.0], [1.0, 2.0]))
    # 'near': every curve is the same fraction of its final AP, so every rung ranks as the end.
    agree = bench.rung_agreement(bench.load_grid("near", tables))
    assert agree["20"] == pytest.approx(1.0) and agree["40"] == pytest.approx(1.0)
    assert math.isnan(agree["seeds"])  # one seed: nothing to compare


def test_grid_learned_applies_selects_test_to_the_truth(tables: Path) -> None:
    assert bench._grid_learned(bench.load_grid("near", tables)) == "learned (best mean AP 23.00)"
    dead = bench._grid_learned(bench.load_grid("dead", tables))
    assert dead.startswith("nothing learned: the best pilot AP is 0.10 (at or near 0)")


def test_rungs_ranked_by_the_recorded_training_loss(tmp_path: Path) -> None:
    """A late bloomer: LoRA r4 is last by AP at 20 iterations and ends best; its training loss
    is already the lowest there. Ranked by loss it reaches the last rung and is picked; ranked by
    AP it is cut at the first rung."""
    late = {**NEAR, "lora:4": (30.0, 3.8, 11.3)}
    write_domain(tmp_path, "late", late, untrained=2.0)
    path = tmp_path / "select_late.curves.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        it, is_r4 = int(r["iteration"]), r["method"] == "lora" and r["lora_rank"] == "4"
        if is_r4 and it < 80:
            r["ap"] = "1.0"
        # Training loss before each rung: r4 lowest everywhere, the others in the order of their AP.
        r["loss"] = str(1.0 if is_r4 else 5.0 - float(r["ap"]) / 10)
    _write(path, rows)
    grid = bench.load_grid("late", tmp_path)
    free = bench.Scenario("no budget")
    by_loss = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR], promote_by="loss")
    by_ap = bench.replay_select(grid, 0, free, pilot=PILOT, lrs=[LR], promote_by="ap")
    assert by_loss.picked == "lora r4 lr 0.003" and by_loss.regret == 0.0
    assert by_ap.picked == "adapter x3 lr 0.003" and by_ap.regret == pytest.approx(30.0 - 22.5)
    agree = bench.rung_agreement(grid)
    assert agree["loss 20"] > agree["20"]  # the loss ranks the first rung as the end does
    res = bench.run_bench(tmp_path, ("late",), seeds=1)
    assert res["promote_by"] == bench.PROMOTE_BY_DEFAULT == "loss"
    strategies = {o["strategy"] for o in res["outcomes"]}
    assert {"select", "select, rungs by AP"} <= strategies
    text = "\n".join(bench.format_bench(res))
    assert "halving rungs ranked by loss" in text and "minus the training loss before the rung" in text


@pytest.mark.parametrize(
    "folder, seeds",
    [
        (bench.TABLES, [0, 1, 2]),
        (bench.TABLES / "heldout", [3, 4, 5]),
        (bench.TABLES / "validation", [6, 7, 8]),
    ],
)
def test_shipped_recordings_load_and_replay(folder: Path, seeds: list[int]) -> None:
    """The recorded grids in the package (the tuning seeds, the held-out ones and the validation
    recording made after the choices they informed) are complete:
    every domain has its 7 configurations on its seeds with curves and losses up to the end."""
    res = bench.run_bench(folder, bench.DOMAINS, seeds=1)
    for d in bench.DOMAINS:
        grid = bench.load_grid(d, folder)
        assert grid.seeds == seeds and len(grid.rows) == 7 and grid.iterations == 320
        for r in grid.rows:
            for s in seeds:
                assert grid.curves[(bench.grid_key(r), s)].keys() == set(range(40, 321, 40))
                assert all(math.isfinite(v) for v in grid.losses[(bench.grid_key(r), s)].values())
    assert {o["domain"] for o in res["outcomes"]} == set(bench.DOMAINS)


def test_shipped_recordings_pool_into_nine_seeds_scored_on_unseen_ones() -> None:
    """The three recordings are one grid on disjoint seeds: pooled, every configuration has 9
    seeds, and every select pick is scored on seeds it did not train on."""
    folders = [bench.TABLES, bench.TABLES / "heldout", bench.TABLES / "validation"]
    res = bench.run_bench(folders, bench.DOMAINS, seeds=2, truth="unseen")
    assert all(s == list(range(9)) for s in res["seeds"].values())
    picks = [o for o in res["outcomes"] if o["strategy"].startswith("select")]
    assert picks and all(o["seen"] and len(o["seen"]) in (1, 2) for o in picks)
