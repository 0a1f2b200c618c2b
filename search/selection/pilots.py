"""`peftsweep select` end to end: shift -> warm-started pilot -> decision -> records -> report.

Output folder (``out_dir``), laid out like a sweep's so a selection is itself an "earlier
sweep" for later selections (pass it with ``--history``)::

    results/trials.parquet   the pilot trials (search.results.store.ResultStore schema)
    domain_stats/            the new domain's feature statistics (search.selection.similarity)
    selection.json           the machine-readable result (also printed with --json)
    report.md, report.html   the decision report (search.selection.report)

The pilot's candidates (:mod:`search.selection.candidates`: neighbours' best configurations
first, then the pilot matrix at each pilot learning rate) go through an Optuna study whose queue is
filled with ``enqueue_trial``, and through successive halving (:mod:`search.selection.halving`):
all train a few iterations, the best continue from where they stopped. Each trial is a
``models.trial`` trial; a rung's trials run one after the other in this process, or in parallel on
a Ray cluster with ``address`` (:mod:`search.selection.parallel`). Before deciding, the best pilot
result is checked against the untrained model (:mod:`search.selection.learned`): when no pilot
learned anything there is no pick.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.errors import UserError
from search.selection.candidates import candidate_points
from search.selection.decision import Budgets, decide
from search.selection.domain_stats import (
    build_feature_model,
    domain_stats_from_images,
    pretraining_domain,
    synthetic_images,
)
from search.selection.halving import HalvingSchedule, successive_halving
from search.selection.learned import likely_causes, nothing_learned
from search.selection.outcome import SelectionResult, SelectionSettings
from search.selection.parallel import LocalExecutor, RayExecutor, RungExecutor
from search.selection.progress import PilotProgress
from search.selection.shift import (
    FeatureStats,
    frechet_distance,
    load_coco_images,
    measure_shift,
)
from search.selection.similarity import (
    Neighbour,
    feature_key_for,
    list_domain_stats,
    load_domain_stats,
    nearest_domains,
    record_domain_stats,
)
from search.selection.warmstart import (
    WarmPoint,
    enqueue_points,
    neighbour_points,
    parse_pilot,
    point_distributions,
)

__all__ = ["RunPoint", "run_selection", "trial_runner", "untrained_ap"]

# flat params (+ stop_at, state_dir, eval_every for a halving rung; seed for an extra seed) -> row
RunPoint = Callable[..., Mapping[str, Any]]


# ----------------------------------------------------------------------------------------- trials


def trial_runner(settings: SelectionSettings) -> RunPoint:
    """Default pilot executor: flat params -> a ``models.trial`` trial on the new domain -> row.

    The TrialSpec mapping is the sweep's own (:func:`search.engine.model_trial.spec_dict`), so a pilot
    trial is exactly the trial a sweep would run for the same parameters. Called with ``stop_at``
    (a halving rung), the trial trains with its full schedule but stops after ``stop_at``
    iterations, saving its training state in ``state_dir``; called again with a later rung it
    resumes from that state (``models.trial``'s exact resume), so a continued candidate is the
    same run as an uninterrupted one. ``eval_every`` must divide every rung. ``seed`` replaces
    the selection's seed (the finalists' extra seeds).
    """
    context = _trial_context(settings)

    def run(
        params: dict[str, Any],
        stop_at: int | None = None,
        state_dir: str | None = None,
        eval_every: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        from models.trial import STATE_FILE, prepare_trial, run_trial
        from search.engine.model_trial import spec_dict

        full = {"lr": settings.lr, "iterations": settings.iterations, **params}
        spec = spec_dict(full, context)
        if seed is not None:
            spec["seed"] = int(seed)
        total = int(spec["iterations"])
        if stop_at is None or state_dir is None:
            return run_trial(spec).to_dict()
        target = min(int(stop_at), total)
        spec["eval_every"] = int(eval_every or target)
        prepared = prepare_trial(spec)
        start = 0
        if (Path(state_dir) / STATE_FILE).is_file():
            start = prepared.load_state(state_dir)

        rung_loss = math.nan

        def report(iteration: int, metrics: dict[str, float]) -> bool:
            nonlocal rung_loss
            if iteration < target:
                return False
            # Mean training loss since the previous report (eval_every steps): the rung's
            # low-noise ranking signal (search.selection.halving.PROMOTE_BY).
            rung_loss = float(metrics.get("loss", math.nan))
            if target < total:
                prepared.save_state(state_dir)  # the next rung continues from here
            return True

        rec = prepared.train_and_evaluate(report=report, start_iteration=start).to_dict()
        rec["resumed_from"] = start
        rec["rung_loss"] = rung_loss
        return rec

    return run


def _trial_context(settings: SelectionSettings) -> Any:
    from types import SimpleNamespace

    domain: dict[str, Any] = {
        "name": settings.resolved_domain_name,
        "synthetic": False,
        "train_json": settings.data_json,
        "train_images": settings.images_dir,
    }
    if settings.eval_json:
        domain.update(eval_json=settings.eval_json, eval_images=settings.eval_images)
    extra = {"image_size": settings.image_size, "device": settings.device, **settings.trial_overrides}
    return SimpleNamespace(
        model={"name": settings.model, "base_checkpoint": settings.base_checkpoint},
        domain=domain,
        trial={"eval_every": 0, "seed": settings.seed, "extra": extra},
    )


def untrained_ap(settings: SelectionSettings, params: Mapping[str, Any]) -> float:
    """AP of the prepared model before any training (LoRA and adapters start as the identity, so
    this is the base with the new domain's class head): the floor a pilot must clear."""
    from models.trial import prepare_trial
    from search.engine.model_trial import spec_dict

    full = {"lr": settings.lr, "iterations": settings.iterations, **params}
    return float(prepare_trial(spec_dict(full, _trial_context(settings))).evaluate().to_dict()["ap"])


def _run_pilot(
    queue: Sequence[WarmPoint],
    run_point: RunPoint,
    domain: str,
    sweep_id: str,
    log: Callable[[str], None],
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    schedule: HalvingSchedule | None = None,
    budgets: Budgets | None = None,
    executor: RungExecutor | None = None,
    state_root: str | os.PathLike[str] | None = None,
    progress: PilotProgress | None = None,
) -> list[dict[str, Any]]:
    """Train the queue with successive halving (:mod:`search.selection.halving`); one row per
    candidate at the furthest rung it reached (``finalist``: it reached the last rung).

    Without ``schedule`` every candidate trains its full length once (one rung). Candidates are
    handed out by an Optuna study in queue order (``enqueue_trial``); those halving stopped early
    are told to it as PRUNED, as a sweep's stopped trials are. Every finished trial of every rung
    is passed to ``on_row`` at once (an interrupted selection keeps what it measured).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Objectives as in a sweep: AP up, trainable share and latency down.
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"], study_name=f"select-{domain}"
    )
    enqueue_points(study, queue)
    dists = point_distributions([w.params for w in queue])
    trials, points = [], []
    for point in queue:
        trial = study.ask()
        # The enqueued values come back through the normal suggest API (Optuna's warm-start path).
        points.append({name: trial.suggest_categorical(name, dists[name].choices) for name in point.params})
        trials.append(trial)
    if schedule is None:
        schedule = HalvingSchedule((max(1, int(queue[0].params.get("iterations") or 1)),) if queue else (1,))
    flat = len(schedule.rungs) == 1
    every = math.gcd(*schedule.rungs)
    executor = executor or LocalExecutor()
    state = Path(state_root) if state_root is not None else None

    def run_rung(cands: Sequence[tuple[int, Mapping[str, Any]]], length: int) -> list[dict[str, Any]]:
        rung = schedule.rungs.index(length)
        steps = length - (schedule.rungs[rung - 1] if rung > 0 else 0)  # each continues from the last rung
        if progress is not None:
            progress.rung(rung, length, len(cands))
        jobs = []
        for i, params in cands:
            kwargs: dict[str, Any] = {}
            if not flat:
                where = (state or Path(tempfile.gettempdir())) / f"{sweep_id}-{i:03d}"
                kwargs = {"stop_at": length, "state_dir": str(where), "eval_every": every}
            jobs.append((run_point, dict(params), kwargs))
        rows: dict[int, dict[str, Any]] = {}

        def done(j: int, rec: dict[str, Any]) -> None:
            i = cands[j][0]
            params = points[i]
            row = {
                **params,
                **rec,
                "trial_id": f"{sweep_id}-{i:03d}",
                "sweep_id": sweep_id,
                "domain": domain,
                "trial_number": i,
                "origin": queue[i].origin,
                "config_json": json.dumps(params, sort_keys=True),
                "iterations_done": rec.get("iterations"),
                "wall_seconds": float(rec.get("finished_at", 0.0)) - float(rec.get("started_at", 0.0)),
                "sampler": "enqueued",
                "rung": rung,
                "rung_iterations": length,
                "finalist": rung == len(schedule.rungs) - 1,
            }
            rows[i] = row
            log(
                f"select: pilot {i + 1}/{len(queue)} [{queue[i].origin}] {_label(params)} "
                f"(rung {rung + 1}/{len(schedule.rungs)}, {length} it): {row['status']}, "
                f"AP {_fmt(row.get('ap'))}, trainable {_fmt(row.get('trainable_pct'), 3)}%, "
                f"latency {_fmt(row.get('latency_ms'))} ms"
            )
            if progress is not None:
                progress.trial(steps, f"last: {_label(params)} AP {_fmt(row.get('ap'))}")
            if on_row is not None:
                on_row(row)

        executor.run(jobs, done)
        return [rows[i] for i, _ in cands]

    result = successive_halving(points, schedule, run_rung, budgets=budgets)
    out: list[dict[str, Any]] = []
    for i, trial in enumerate(trials):
        row = result.last_rows[i]
        values = [row.get("ap"), row.get("trainable_pct"), row.get("latency_ms")]
        ok = row.get("status") == "completed" and all(
            isinstance(v, int | float) and math.isfinite(float(v)) for v in values
        )
        if ok and row["finalist"]:
            study.tell(trial, [float(v) for v in values])  # type: ignore[arg-type]
        elif ok:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        out.append(dict(row))
    if state is not None and not flat:
        shutil.rmtree(state, ignore_errors=True)  # resume states are only for the next rung
    return out


def _extra_seeds(
    records: list[dict[str, Any]],
    run_point: RunPoint,
    settings: SelectionSettings,
    sweep_id: str,
    executor: RungExecutor,
    log: Callable[[str], None],
    store: Callable[[list[dict[str, Any]]], None],
    progress: PilotProgress | None = None,
) -> list[dict[str, Any]]:
    """The finalists again with seeds seed+1 .. seed+seeds-1 at the full length: their AP spread."""
    finals = [r for r in records if r.get("finalist") and r.get("status") == "completed"]
    extra: list[dict[str, Any]] = []
    jobs, meta = [], []
    for r in finals:
        params = json.loads(str(r["config_json"]))
        for k in range(1, settings.seeds):
            jobs.append((run_point, dict(params), {"seed": settings.seed + k}))
            meta.append((r, params, settings.seed + k))
    if progress is not None:
        progress.seeds(len(jobs))

    def done(j: int, rec: dict[str, Any]) -> None:
        r, params, seed = meta[j]
        row = {
            **params,
            **rec,
            "trial_id": f"{r['trial_id']}-s{seed}",
            "sweep_id": sweep_id,
            "domain": r["domain"],
            "trial_number": r["trial_number"],
            "origin": f"{r['origin']}, seed {seed}",
            "config_json": r["config_json"],
            "iterations_done": rec.get("iterations"),
            "seed": seed,
            "sampler": "enqueued",
            "rung": r["rung"],
            "rung_iterations": r["rung_iterations"],
            "finalist": True,
        }
        log(f"select: {_label(params)} seed {seed}: {row['status']}, AP {_fmt(row.get('ap'))}")
        if progress is not None:
            progress.trial(settings.iterations, f"last: {_label(params)} seed {seed}")
        store([row])
        extra.append(row)

    executor.run(jobs, done)
    return extra


def _trained(row: Mapping[str, Any]) -> int:
    """Iterations a candidate's last row trained in all (a continued candidate resumes, so its
    furthest rung is its whole cost)."""
    try:
        return int(float(row.get("iterations_done") or 0))
    except (TypeError, ValueError):
        return 0


def _train_images(settings: SelectionSettings) -> int | None:
    try:
        doc = json.loads(Path(settings.data_json).read_text())
        return len(doc.get("images") or [])
    except (OSError, ValueError, AttributeError):
        return None


def _label(params: Mapping[str, Any]) -> str:
    from search.selection.decision import config_label

    return config_label(params)


def _fmt(v: Any, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"


# ----------------------------------------------------------------------------------------- main


def _reference_stats(settings: SelectionSettings, reference: str, model: Any, key: str) -> FeatureStats:
    """Statistics of the pretraining data: stored beside the base checkpoint (``domain_stats/``),
    else generated (a synthetic domain), else recorded in a history folder; UserError otherwise."""
    from models.data.synthetic import DOMAINS

    places = [str(Path(settings.base_checkpoint).parent)] if settings.base_checkpoint else []
    for place in places:
        if any(r["domain"] == reference for r in list_domain_stats(place, key)):
            return load_domain_stats(place, reference, key)
    if reference in DOMAINS:
        images = synthetic_images(reference, settings.shift_images, settings.seed + 1, settings.image_size)
        return domain_stats_from_images(model, images, settings.image_size)
    for place in settings.history:
        if any(r["domain"] == reference for r in list_domain_stats(place, key)):
            return load_domain_stats(place, reference, key)
    raise UserError(
        f"--reference-domain: {reference!r} is neither a synthetic domain nor recorded (with this "
        "model and base) beside the base checkpoint or in a --history folder"
    )


def _known_shifts(
    history: Sequence[str], reference: FeatureStats, key: str, exclude: Sequence[str]
) -> dict[str, float]:
    """Fréchet distance from the reference to each earlier domain (same extractor): scale for the report."""
    out: dict[str, float] = {}
    for h in history:
        for row in list_domain_stats(h, key):
            name = str(row["domain"])
            if name in exclude or name in out:
                continue
            out[name] = frechet_distance(reference, load_domain_stats(h, name, key))
    return out


def run_selection(
    settings: SelectionSettings,
    *,
    run_point: RunPoint | None = None,
    log: Callable[[str], None] = print,
    write_report: bool = True,
    progress: PilotProgress | None = None,
) -> SelectionResult:
    """Measure the shift, run the warm-started pilot, decide, record, report (module docstring).

    ``progress`` (:class:`search.selection.progress.PilotProgress`) shows the pilot's rungs,
    candidates left and ETA; the caller closes it."""
    t_start = time.time()
    data_json, images_dir = Path(settings.data_json), Path(settings.images_dir)
    if not data_json.is_file():
        raise UserError(f"--data: not found: {data_json}")
    if not images_dir.is_dir():
        raise UserError(f"--images: not a directory: {images_dir}")
    if settings.base_checkpoint and not Path(settings.base_checkpoint).is_file():
        raise UserError(f"--base: not found: {settings.base_checkpoint}")
    for h in settings.history:
        if not Path(h).is_dir():
            raise UserError(f"--history: not a directory: {h}")
    parse_pilot(settings.pilot)  # fail on a bad --pilot before any feature extraction
    from models.data.check import check_coco_dataset

    check_coco_dataset(data_json, images_dir, read_images=False)
    # Connect first: a bad or unreachable --address ends here, before a folder is written or a
    # feature computed.
    executor: RungExecutor = (
        RayExecutor(
            settings.address,
            token_file=settings.token_file,
            num_cpus=settings.cpus_per_trial,
            num_gpus=settings.gpus_per_trial,
        )
        if settings.address
        else LocalExecutor()
    )
    try:
        out = Path(settings.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        domain = settings.resolved_domain_name
        reference = settings.reference_domain or pretraining_domain(settings.base_checkpoint)

        # 1. shift, in the base model's own backbone feature space.
        model = build_feature_model(settings.model, settings.base_checkpoint)
        target_images = list(load_coco_images(data_json, images_dir, limit=settings.shift_images))
        target_stats = domain_stats_from_images(model, target_images, settings.image_size)
        key = feature_key_for(settings.model, settings.base_checkpoint, target_stats.levels)
        ref_stats = _reference_stats(settings, reference, model, key)
        del model
        shift = measure_shift(ref_stats, target_stats)
        log(
            f"select: domain {domain!r}: shift from {reference!r}: Frechet {shift.frechet:.3f}, "
            f"MMD^2 {shift.mmd:.4f} ({shift.n_target} images, {shift.dim}-d features)"
        )

        # 2. warm start from the nearest earlier domains, then the pilot matrix.
        neighbours: list[Neighbour] = []
        for h in settings.history:
            neighbours.extend(
                nearest_domains(h, target_stats, settings.neighbours, feature_key=key, exclude=[reference])
            )
        neighbours.sort(key=lambda n: (n.distance, n.domain))
        known = _known_shifts(settings.history, ref_stats, key, exclude=[reference])
        neighbours = neighbours[: settings.neighbours]
        warm = neighbour_points(
            settings.history,
            target_stats,
            feature_key=key,
            budgets=settings.budgets,
            k=settings.neighbours,
            exclude=[reference],
        )
        queue = candidate_points(settings.pilot, settings.pilot_lrs, settings.iterations, warm=warm)
        schedule = HalvingSchedule.geometric(
            settings.iterations, settings.rungs, settings.eta, promote_by=settings.promote_by
        )
        if neighbours:
            log(
                "select: nearest earlier domains: "
                + ", ".join(f"{n.domain} ({n.distance:.3f})" for n in neighbours)
            )

        # 3. the pilot: successive halving over the queue (an enqueued Optuna study), here or on Ray.
        sweep_id = f"select-{uuid.uuid4().hex[:8]}"
        runner = run_point or trial_runner(settings)
        untrained = math.nan
        if run_point is None and queue:
            untrained = untrained_ap(settings, queue[0].params)
            log(f"select: untrained model (base + new class head): AP {untrained:.2f}")
        from search.results.store import ResultStore

        store = ResultStore(out / "results")
        log(
            f"select: {len(queue)} candidates, rungs {list(schedule.rungs)} iterations "
            f"(keep 1/{schedule.eta:g}, ranked by {schedule.promote_by}), "
            + (f"on the Ray cluster at {settings.address}" if settings.address else "in this process")
        )
        if progress is not None:
            progress.start(schedule.rungs, len(queue), schedule, extra_seeds=settings.seeds - 1)
        # Each finished trial is stored at once: an interrupted selection keeps what it measured.
        records = _run_pilot(
            queue,
            runner,
            domain,
            sweep_id,
            log,
            on_row=lambda row: store.upsert_trials([row]),
            schedule=schedule,
            budgets=settings.budgets,
            executor=executor,
            state_root=out / "pilot_state",
            progress=progress,
        )
        if settings.seeds > 1:
            records += _extra_seeds(
                records, runner, settings, sweep_id, executor, log, store.upsert_trials, progress
            )
    finally:
        executor.close()
    record_domain_stats(out, domain, target_stats, feature_key=key, source=f"select {data_json}")

    # 4. decision among the candidates that reached the last rung (comparable training lengths).
    finals = [r for r in records if r.get("finalist", True)]
    verdict = None
    if not settings.accept_untrained:
        verdict = nothing_learned(finals, untrained_ap=untrained)
    decision = decide(finals, settings.budgets)
    causes: list[str] = []
    if verdict is not None:
        causes = likely_causes(
            iterations=settings.iterations, train_images=_train_images(settings), untrained_ap=untrained
        )
        log(f"select: no pilot learned anything: {verdict}")
    result = SelectionResult(
        domain=domain,
        reference_domain=reference,
        shift=shift,
        neighbours=neighbours,
        queue=queue,
        records=records,
        decision=decision,
        out_dir=out,
        feature_key=key,
        seconds=time.time() - t_start,
        known_shifts=known,
        untrained_ap=untrained,
        nothing_learned=verdict,
        likely_causes=causes,
        compute_iterations=sum(_trained(r) for r in records),
        rungs=list(schedule.rungs),
        promote_by=schedule.promote_by,
    )
    from models.data.coco import atomic_write_json

    atomic_write_json(out / "selection.json", result.to_dict())
    if write_report:
        from search.selection.report import write_selection_report

        write_selection_report(result)
    return result
