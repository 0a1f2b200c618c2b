"""``peftsweep bench engine``: the sweep engine on a simulated cluster, next to today's behaviour.

What it measures, all in one run on this machine:

1. *Busy fraction*: a multi-study sweep (``studies`` x ``trials``) through the real runner
   (:func:`search.engine.runner.run_sweep`: one Tune run, :class:`search.engine.studies.StudyMux`,
   MO-ASHA per study, the Parquet store) on a local Ray that advertises ``slots`` logical GPUs;
   each trial asks for one. Trials sleep per iteration for durations drawn from the recorded real
   table (``tables/recorded_trials.csv``: per-configuration training seconds of the real grid),
   multiplied by ``time_scale``. Busy fraction = slot-seconds inside trials (the store's
   ``started_at``..``finished_at`` of every trial) / (slots x the sweep's wall time). The same
   studies are then run the way main ran them before: one study after another, each its own
   sweep (so every study's tail idles the slots its neighbours could use).
2. *Driver overhead per trial event*: the searcher multiplexer plus the store callbacks, driven
   directly (no Ray) for up to ``overhead_trials`` trials: seconds per event (suggest, trial
   start, each intermediate report, trial end), sampler time reported separately.
3. *Store write time against its row count*: one trial-row upsert into stores that already hold
   100, 1,000 and 10,000 rows (median of ``writes`` writes; compaction included as it happens).
4. *Fronts at the end*: Pareto fronts and hypervolume of every study for 1,000 trials.

Targets (issue 16): busy >= 90 %; driver overhead <= 20 ms per event up to 2,000 trials; store
write time within 2x from 100 to 10,000 rows; fronts and hypervolume for 1,000 trials <= 1 s.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.progress import Progress

__all__ = [
    "EngineBenchSettings",
    "run_engine_bench",
    "format_report",
    "prepare",
    "SleepTrial",
    "busy_fraction",
    "progress_totals",
]

TABLE = Path(__file__).resolve().parent / "tables" / "recorded_trials.csv"
_DOMAINS = ("clean", "clutter", "xray", "street", "source")


@dataclass
class EngineBenchSettings:
    """Sizes of the run (the defaults are what fits a shared 2-core machine; see the README)."""

    studies: int = 4  # studies = models x domains of the simulated sweep
    trials: int = 16  # trials per study
    slots: int = 8  # simulated GPUs (Ray logical GPUs; one per trial)
    time_scale: float = 1.0  # factor on the recorded training seconds (the sleep per trial)
    iterations: int = 8  # reports per trial (MO-ASHA rungs at 2 and 4)
    overhead_trials: tuple[int, ...] = (500, 1000, 2000)
    store_rows: tuple[int, ...] = (100, 1000, 10000)
    writes: int = 30
    front_trials: int = 1000
    seed: int = 0
    seeds: int = 1  # simulated sweeps (sampler seeds 0..seeds-1); worst beside the mean
    skip_cluster: bool = False  # only the driver/store/front parts (quick checks)
    workdir: str | None = None


# ------------------------------------------------------------------------------ the sleep trial
def _table() -> list[dict[str, str]]:
    with open(TABLE, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("status") == "completed"]


def _row_for(params: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, str]:
    """The recorded row of the same configuration where the table has it, else one of its method."""
    same = [r for r in rows if r["method"] == params.get("method")] or rows
    for r in same:
        if all(
            str(params.get(k) or "") in (r[k], r[k].rstrip("0").rstrip(".") if "." in r[k] else r[k])
            for k in ("lora_rank", "adapter_repetitions")
            if r.get(k)
        ):
            return r
    return same[hash(repr(sorted(params.items()))) % len(same)]


class SleepTrial:
    """A trial that sleeps for its recorded training time (x ``time_scale``) in ``iterations`` steps."""

    def __init__(self, params: dict[str, Any], context: Any) -> None:
        extra = dict(context.trial.get("extra", {}))
        self.params = params
        self.scale = float(extra.get("time_scale", 1.0))
        self.row = _row_for(params, _table())
        ap = float(self.row["ap"]) / 100.0
        rng = random.Random(repr(sorted(params.items())))
        self.ap = max(0.0, ap + rng.gauss(0, 0.01))
        self.seconds = float(self.row["train_seconds"]) * self.scale
        self.costs = {
            "trainable_params": int(float(self.row["trainable_params"])),
            "total_params": int(float(self.row["total_params"])),
            "trainable_pct": float(self.row["trainable_pct"]),
            "latency_ms": float(self.row["latency_ms"]),
        }

    def train_and_evaluate(
        self, report: Callable[[int, dict[str, Any]], None], start_iteration: int = 0
    ) -> dict[str, Any]:
        n = int(self.params.get("iterations") or 8)
        ap = 0.0
        for t in range(start_iteration + 1, n + 1):
            time.sleep(self.seconds / n)
            ap = self.ap * (1 - math.exp(-3 * t / n))
            report(t, {"iteration": t, "ap": ap, "loss": 1 - ap})
        return {"status": "completed", "error": "", "ap": ap, "iterations": n, "device": "sim"}


def prepare(params: dict[str, Any], context: Any) -> SleepTrial:
    """Trial factory (``trial.function: search.benchmarks.engine:prepare``)."""
    return SleepTrial(params, context)


# --------------------------------------------------------------------------------- measurements
def busy_fraction(started: list[float], finished: list[float], slots: int, t0: float, t1: float) -> float:
    """Slot-seconds inside trials over ``slots`` x the wall time ``t1 - t0``."""
    inside = sum(max(0.0, min(f, t1) - max(s, t0)) for s, f in zip(started, finished))
    return inside / (slots * max(1e-9, t1 - t0))


def _sweep_config(s: EngineBenchSettings, out: Path, studies: list[tuple[str, str]], trials: int) -> Any:
    from search.config import parse_config

    labels = sorted({m for m, _ in studies})
    domains = sorted({d for _, d in studies})
    return parse_config(
        {
            "name": "engine-bench",
            "models": [{"name": "maskdino_tiny", "label": m} for m in labels],
            "domains": domains,
            "space": {
                "methods": ["lora", "adapter", "full_head", "decoder_only", "class_mask"],
                "lora": {"rank": [2, 4, 8, 16]},
                "adapter": {"repetitions": [1, 2, 3, 4]},
                # A continuous learning rate, as real sweeps have: every proposal is a new point
                # (a finite 11-point space would be exhausted by the larger runs and then
                # measure the repeat filter's asks, search.engine.repeats, not the engine).
                "lr": {"low": 1e-4, "high": 3e-3, "log": True},
                "iterations": [s.iterations],
            },
            "budget": {
                "trials": trials,
                "concurrency": s.slots,
                "cpus_per_trial": 0.01,
                "gpus_per_trial": 1,
                "max_failures": 0,
            },
            "sampler": {"name": "tpe", "seed": s.seed},
            "early_stopping": {"enabled": True, "grace_iterations": 2, "reduction_factor": 2},
            "trial": {
                "function": "search.benchmarks.engine:prepare",
                "eval_every": 1,
                "extra": {"time_scale": s.time_scale},
            },
            "output_dir": str(out),
        },
        source="bench engine",
    )


def _study_pairs(n: int) -> list[tuple[str, str]]:
    models = max(1, math.ceil(n / len(_DOMAINS[:4])))
    pairs = [(f"m{i}", d) for i in range(models) for d in _DOMAINS[:4]]
    return pairs[:n]


def _cluster_part(s: EngineBenchSettings, work: Path, progress: Progress) -> dict[str, Any]:
    import ray

    from search.engine.progress import quiet_libraries
    from search.engine.runner import run_sweep
    from search.results.store import ResultStore

    # Ray's start-up lines would tear the progress display and are not the benchmark's output.
    with quiet_libraries(True):
        ray.init(
            address="local",
            num_cpus=max(2, s.slots),  # logical: trials ask for 0.01 CPU each
            num_gpus=s.slots,  # the simulated GPUs
            include_dashboard=False,
            log_to_driver=False,
        )
    out: dict[str, Any] = {}
    try:
        pairs = _study_pairs(s.studies)
        if len({m for m, _ in pairs}) > 1 and len(pairs) % 4:
            raise ValueError("studies must be a multiple of 4 above 4 (models x 4 domains)")
        # Warm the imports the search space's first ask makes (models.peft, torch: ~10-20 s here
        # once per driver process); a sweep pays them once, not per study.
        from search.config.names import allowed_names

        allowed_names("targets")
        t0 = time.time()
        res = run_sweep(_sweep_config(s, work / "all", pairs, s.trials), quiet=True, report=False)
        t1 = time.time()
        df = ResultStore(res.output_dir / "results").trials()
        progress.update("cluster", advance=len(df), info="one after another")
        out["together"] = {
            "wall_s": t1 - t0,
            "trials": len(df),
            "busy": busy_fraction(list(df.started_at), list(df.finished_at), s.slots, t0, t1),
            # Ray's one-time start of the trial workers (process start, imports): on this 2-core
            # machine 8 workers importing at once take tens of seconds; a cluster node starts its
            # own. Busy from the first trial's start isolates what the engine's scheduling costs.
            "startup_s": float(df.started_at.min()) - t0,
            "busy_after_startup": busy_fraction(
                list(df.started_at), list(df.finished_at), s.slots, float(df.started_at.min()), t1
            ),
            "statuses": df.status.value_counts().to_dict(),
            "overlap_studies": int(df.study.nunique()),
        }
        # Before: one study after another (each its own sweep), the same slots.
        walls, inside, steady = 0.0, 0.0, 0.0
        for i, pair in enumerate(pairs):
            a = time.time()
            r = run_sweep(_sweep_config(s, work / f"seq{i}", [pair], s.trials), quiet=True, report=False)
            b = time.time()
            d = ResultStore(r.output_dir / "results").trials()
            progress.update("cluster", advance=len(d))
            walls += b - a
            inside += (
                busy_fraction(list(d.started_at), list(d.finished_at), s.slots, a, b) * s.slots * (b - a)
            )
            steady += b - float(d.started_at.min())
        out["sequential"] = {
            "wall_s": walls,
            "busy": inside / (s.slots * walls),
            "busy_after_startup": inside / (s.slots * steady),
        }
    finally:
        ray.shutdown()
    return out


class _FakeTrial:
    """What the store callback reads of a Tune trial."""

    def __init__(self, trial_id: str, config: dict[str, Any], number: int) -> None:
        self.trial_id = trial_id
        self.config = config
        self.experiment_tag = f"{number}_x"
        self.last_result: dict[str, Any] = {}
        self.error_file = None

    def get_error(self) -> None:
        return None


def _overhead_part(s: EngineBenchSettings, work: Path, progress: Progress) -> dict[str, Any]:
    """Mux + store callbacks driven for N trials without Ray; seconds per event."""
    from search.engine.callbacks import StoreCallback
    from search.engine.studies import SearcherFactory, StudyCallbacks, StudyMux, StudySpec

    cfg = _sweep_config(s, work / "overhead-cfg", _study_pairs(8), max(s.overhead_trials))
    out: dict[str, Any] = {}
    n_max = max(s.overhead_trials)
    specs = [StudySpec(f"s{i}", "m", d, n_max // 8 + 1, i) for i, d in enumerate(_DOMAINS[:4] * 2)]
    factory = SearcherFactory(
        sweep_id="bench",
        space=cfg.space,
        metrics=cfg.metric_names,
        modes=cfg.modes,
        sampler="random",  # the sampler's own cost is the samplers' business; reported apart
        seed=0,
        population_size=8,
        startup_trials=4,
        constraints=[],
        initial_points=[],
        storage_url=str(work / "overhead" / "journal.log"),
    )
    mux = StudyMux(specs, factory, concurrency=s.slots, metric=cfg.metric_names, mode=cfg.modes)
    root = str(work / "overhead" / "results")
    cbs = StudyCallbacks(
        {sp.name: [StoreCallback(root, "bench", sp.domain, "random", sp.trials, quiet=True)] for sp in specs}
    )
    rng = random.Random(s.seed)
    checkpoints = sorted(s.overhead_trials)
    window: list[float] = []
    events = 0
    for i in range(1, n_max + 1):
        tid = f"t{i:05d}"
        a = time.perf_counter()
        cfg_i = mux.suggest(tid)
        assert isinstance(cfg_i, dict)
        trial: Any = _FakeTrial(tid, cfg_i, i)
        cbs.on_trial_start(0, [], trial)
        for it in (1, 2):
            res = {
                "iteration": it,
                "ap": rng.random(),
                "trainable_pct": 1.0,
                "latency_ms": 10.0,
                "final": False,
            }
            mux.on_trial_result(tid, res)
            cbs.on_trial_result(0, [], trial, res)
        final = {**res, "final": True, "status": "completed", "iterations_done": 2}
        trial.last_result = final
        mux.on_trial_complete(tid, final)
        cbs.on_trial_complete(0, [], trial)
        window.append((time.perf_counter() - a) / 6)  # six driver events per trial
        events += 6
        progress.update("overhead", advance=1)  # outside the timed window
        if i in checkpoints:
            out[str(i)] = {
                "mean_ms_per_event_last_100": 1000 * statistics.fmean(window[-100:]),
                "max_ms_per_event_last_100": 1000 * max(window[-100:]),
                "searcher_ms_per_event": 1000 * mux.seconds / max(1, mux.events),
                "callbacks_ms_per_event": 1000 * cbs.seconds / max(1, cbs.events),
            }
    return out


def _store_part(s: EngineBenchSettings, work: Path, progress: Progress) -> dict[str, Any]:
    from search.results.store import ResultStore

    out: dict[str, Any] = {}
    for n in s.store_rows:
        st = ResultStore(work / f"store-{n}")
        rows = [{"trial_id": f"r{i}", "status": "completed", "ap": 0.5, "method": "lora"} for i in range(n)]
        for k in range(0, n, 100):  # as a sweep fills it: many small parts, compacted as they pile up
            st.upsert_trials(rows[k : k + 100])
            progress.update("store", advance=1, info=f"{n} rows")
        times = []
        for w in range(s.writes):
            a = time.perf_counter()
            st.upsert_trials([{"trial_id": f"r{w}", "status": "completed", "ap": 0.6}])
            times.append(time.perf_counter() - a)
            progress.update("store", advance=1)
        a = time.perf_counter()
        got = len(st.trials())
        read = time.perf_counter() - a
        assert got == n, (got, n)
        out[str(n)] = {
            "write_ms_median": 1000 * statistics.median(times),
            "write_ms_max": 1000 * max(times),
            "read_ms": 1000 * read,
        }
    return out


def _fronts_part(s: EngineBenchSettings) -> dict[str, Any]:
    import pandas as pd

    from search.results.pareto import compute_fronts

    rows = _table()
    rng = random.Random(s.seed)
    recs = []
    for i in range(s.front_trials):
        r = rng.choice(rows)
        recs.append(
            {
                "trial_id": f"t{i}",
                "study": f"s{i % 8}",
                "status": "completed",
                "ap": float(r["ap"]) + rng.gauss(0, 1),
                "trainable_pct": float(r["trainable_pct"]) * rng.uniform(0.9, 1.1),
                "latency_ms": float(r["latency_ms"]) + rng.gauss(0, 0.3),
            }
        )
    df = pd.DataFrame(recs)
    a = time.perf_counter()
    fronts = compute_fronts(
        df, ["ap", "trainable_pct", "latency_ms"], ["max", "min", "min"], [0.0, 100.0, None], by="study"
    )
    secs = time.perf_counter() - a
    return {"seconds": secs, "studies": len(fronts), "front_sizes": [len(f.front) for f in fronts.values()]}


def progress_totals(s: EngineBenchSettings) -> dict[str, int]:
    """Units of each part's progress row: store upserts, overhead trials, trials run on the cluster."""
    totals = {
        "store": sum(math.ceil(n / 100) + s.writes for n in s.store_rows),
        "overhead": max(s.overhead_trials),
    }
    if not s.skip_cluster:
        totals["cluster"] = s.seeds * 2 * s.studies * s.trials  # all at once, then one after another
    return totals


def run_engine_bench(s: EngineBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """All parts of the benchmark; ``progress`` (default: none shown) gets one row per part."""
    import platform

    from models.progress import Progress

    progress = progress if progress is not None else Progress("off")
    work = Path(s.workdir) if s.workdir else Path(tempfile.mkdtemp(prefix="peftsweep-bench-engine-"))
    result: dict[str, Any] = {"settings": {k: v for k, v in vars(s).items()}, "machine": _machine()}
    result["python"] = platform.python_version()
    totals = progress_totals(s)
    labels = {"store": "store writes", "overhead": "driver overhead, trials", "cluster": "cluster, trials"}
    for key, total in totals.items():
        progress.add(key, f"bench engine: {labels[key]}", total=total)
    result["fronts"] = _fronts_part(s)
    result["store"] = _store_part(s, work, progress)
    result["overhead"] = _overhead_part(s, work, progress)
    if not s.skip_cluster:
        result["cluster"] = [
            _cluster_part(dataclasses.replace(s, seed=s.seed + k), work / f"seed{k}", progress)
            for k in range(s.seeds)
        ]
    return result


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def format_report(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [f"bench engine on {r['machine']}", ""]
    if "cluster" in r:
        runs = r["cluster"]
        together = [c["together"]["busy"] for c in runs]
        before = [c["sequential"]["busy"] for c in runs]
        lines += [
            f"simulated cluster: {s['studies']} studies x {s['trials']} trials on {s['slots']} logical "
            f"GPUs, MO-ASHA; each trial sleeps its recorded train_seconds x {s['time_scale']}",
        ]
        for k, c in enumerate(runs):
            t, q = c["together"], c["sequential"]
            lines.append(
                f"  seed {k}: all studies at once busy {100 * t['busy']:.1f} % (wall {t['wall_s']:.0f} s, "
                f"{t['trials']} trials {t['statuses']}); one after another busy {100 * q['busy']:.1f} % "
                f"(wall {q['wall_s']:.0f} s)"
            )
            if "busy_after_startup" in t:
                lines.append(
                    f"          after the workers' start ({t['startup_s']:.0f} s): all at once "
                    f"{100 * t['busy_after_startup']:.1f} %, one after another "
                    f"{100 * q['busy_after_startup']:.1f} %"
                )
        lines += [
            f"  busy fraction, all studies at once: mean {100 * statistics.fmean(together):.1f} %, "
            f"worst {100 * min(together):.1f} %",
            f"  busy fraction, one after another (main before issue 16): mean "
            f"{100 * statistics.fmean(before):.1f} %, worst {100 * min(before):.1f} %",
        ]
        steady = [c["together"]["busy_after_startup"] for c in runs if "busy_after_startup" in c["together"]]
        if steady:
            lines.append(
                f"  busy fraction after the workers' start, all at once: mean "
                f"{100 * statistics.fmean(steady):.1f} %, worst {100 * min(steady):.1f} %"
            )
        lines.append("")
    lines.append("driver overhead (mux + store callbacks, random sampler, no Ray), per event:")
    for n, v in r["overhead"].items():
        lines.append(
            f"  at {n:>5} trials: mean {v['mean_ms_per_event_last_100']:.2f} ms, "
            f"max {v['max_ms_per_event_last_100']:.2f} ms (last 100 trials); so far: searcher "
            f"{v['searcher_ms_per_event']:.2f} ms, store callbacks {v['callbacks_ms_per_event']:.2f} ms"
        )
    lines.append("store: one trial-row upsert into a store of N rows (median of writes; read = whole table)")
    base = None
    for n, v in r["store"].items():
        base = base or v["write_ms_median"]
        lines.append(
            f"  {n:>6} rows: write {v['write_ms_median']:.2f} ms (max {v['write_ms_max']:.1f}), "
            f"{v['write_ms_median'] / base:.2f}x the smallest; read {v['read_ms']:.1f} ms"
        )
    f = r["fronts"]
    lines.append(
        f"fronts + hypervolume of {s['front_trials']} trials over {f['studies']} studies: "
        f"{f['seconds']:.3f} s"
    )
    return "\n".join(lines)


def add_arguments(parser: Any) -> None:
    d = EngineBenchSettings()
    parser.add_argument("--studies", type=int, default=d.studies, help="studies of the simulated sweep")
    parser.add_argument("--trials", type=int, default=d.trials, help="trials per study")
    parser.add_argument("--slots", type=int, default=d.slots, help="simulated GPUs (Ray logical GPUs)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=d.time_scale,
        help="factor on the recorded training seconds each simulated trial sleeps",
    )
    parser.add_argument("--seeds", type=int, default=d.seeds, help="simulated sweeps (sampler seeds)")
    parser.add_argument("--skip-cluster", action="store_true", help="only driver, store and front figures")
    parser.add_argument(
        "--overhead-trials",
        default=",".join(map(str, d.overhead_trials)),
        help="driver overhead measured at these trial counts (comma list)",
    )
    parser.add_argument(
        "--store-rows", default=",".join(map(str, d.store_rows)), help="store sizes (comma list of rows)"
    )
    parser.add_argument("--writes", type=int, default=d.writes, help="timed upserts per store size")
    parser.add_argument("--front-trials", type=int, default=d.front_trials, help="trials of the fronts part")
    parser.add_argument("--quiet", action="store_true", help="no progress: only the figures")
    parser.add_argument("--out", default=None, help="folder for engine.json and engine.txt")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def _counts(text: str, flag: str) -> tuple[int, ...]:
    """``"100,1000"`` -> ``(100, 1000)``; positive integers only."""
    from models.errors import UserError

    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UserError(f"{flag}: a comma list of positive integers, got {text!r}")
    return values


def main(args: Any) -> int:
    import json

    from models.errors import UserError
    from models.progress import Progress
    from search.engine.progress import quiet_libraries

    if min(args.studies, args.trials, args.slots, args.seeds) < 1 or args.time_scale <= 0:
        raise UserError("--studies, --trials, --slots, --seeds and --time-scale must be positive")
    if args.writes < 1 or args.front_trials < 1:
        raise UserError("--writes and --front-trials must be positive")
    s = EngineBenchSettings(
        studies=args.studies,
        trials=args.trials,
        slots=args.slots,
        time_scale=args.time_scale,
        seeds=args.seeds,
        skip_cluster=args.skip_cluster,
        overhead_trials=_counts(args.overhead_trials, "--overhead-trials"),
        store_rows=_counts(args.store_rows, "--store-rows"),
        writes=args.writes,
        front_trials=args.front_trials,
    )
    # Progress on stderr, one row per part; stdout is the figures. Ray's and Optuna's log lines
    # (a "new study created" per simulated study) are not the benchmark's output: never shown.
    with Progress("off" if args.quiet else "auto") as progress, quiet_libraries(True):
        result = run_engine_bench(s, progress)
    text = format_report(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "engine.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "engine.txt").write_text(text + "\n")
    print(json.dumps(result, indent=1, default=str) if args.json else text)
    return 0
