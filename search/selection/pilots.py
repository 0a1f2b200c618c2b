"""`peftsweep select` end to end: shift -> warm-started pilot -> decision -> records -> report.

Output folder (``out_dir``), laid out like a sweep's so a selection is itself an "earlier
sweep" for later selections (pass it with ``--history``)::

    results/trials.parquet   the pilot trials (search.results.store.ResultStore schema)
    domain_stats/            the new domain's feature statistics (search.selection.similarity)
    selection.json           the machine-readable result (also printed with --json)
    report.md, report.html   the decision report (search.selection.report)

The pilot runs in this process, one trial after the other, through an Optuna study whose queue
is filled with ``enqueue_trial`` (neighbours' best configurations first, then the pilot
matrix); each trial is ``models.trial.run_trial``. A selection is a handful of trials, so Ray's
start-up and scheduling would cost more than they save.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.errors import UserError
from search.selection.decision import decide
from search.selection.domain_stats import (
    build_feature_model,
    domain_stats_from_images,
    pretraining_domain,
    synthetic_images,
)
from search.selection.outcome import SelectionResult, SelectionSettings
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
    pilot_matrix,
    point_distributions,
    warm_start_queue,
)

__all__ = ["RunPoint", "run_selection", "trial_runner"]

RunPoint = Callable[[dict[str, Any]], dict[str, Any]]


# ----------------------------------------------------------------------------------------- trials


def trial_runner(settings: SelectionSettings) -> RunPoint:
    """Default pilot executor: flat params -> ``models.trial.run_trial`` on the new domain -> row.

    The TrialSpec mapping is the sweep's own (:func:`search.engine.model_trial.spec_dict`), so a pilot
    trial is exactly the trial a sweep would run for the same parameters.
    """
    from types import SimpleNamespace

    from search.engine.model_trial import spec_dict

    domain: dict[str, Any] = {
        "name": settings.resolved_domain_name,
        "synthetic": False,
        "train_json": settings.data_json,
        "train_images": settings.images_dir,
    }
    if settings.eval_json:
        domain.update(eval_json=settings.eval_json, eval_images=settings.eval_images)
    extra = {"image_size": settings.image_size, "device": settings.device, **settings.trial_overrides}
    context = SimpleNamespace(
        model={"name": settings.model, "base_checkpoint": settings.base_checkpoint},
        domain=domain,
        trial={"eval_every": 0, "seed": settings.seed, "extra": extra},
    )

    def run(params: dict[str, Any]) -> dict[str, Any]:
        from models.trial import run_trial

        full = {"lr": settings.lr, "iterations": settings.iterations, **params}
        return run_trial(spec_dict(full, context)).to_dict()

    return run


def _run_pilot(
    queue: Sequence[WarmPoint],
    run_point: RunPoint,
    domain: str,
    sweep_id: str,
    log: Callable[[str], None],
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Objectives as in a sweep: AP up, trainable share and latency down.
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"], study_name=f"select-{domain}"
    )
    enqueue_points(study, queue)
    dists = point_distributions([w.params for w in queue])
    rows: list[dict[str, Any]] = []
    for i, point in enumerate(queue):
        trial = study.ask()
        # The enqueued values come back through the normal suggest API (Optuna's warm-start path).
        params = {name: trial.suggest_categorical(name, dists[name].choices) for name in point.params}
        t0 = time.time()
        try:
            rec = dict(run_point(params))
        except UserError:
            raise
        except Exception as exc:  # one broken configuration must not sink the selection
            rec = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        rec.setdefault("status", "completed")
        row = {
            **params,
            **rec,
            "trial_id": f"{sweep_id}-{i:03d}",
            "sweep_id": sweep_id,
            "domain": domain,
            "trial_number": i,
            "origin": point.origin,
            "config_json": json.dumps(params, sort_keys=True),
            "iterations_done": rec.get("iterations"),
            "started_at": t0,
            "finished_at": time.time(),
            "wall_seconds": time.time() - t0,
            "sampler": "enqueued",
        }
        values = [row.get("ap"), row.get("trainable_pct"), row.get("latency_ms")]
        ok = row["status"] == "completed" and all(
            isinstance(v, int | float) and math.isfinite(float(v)) for v in values
        )
        if ok:
            study.tell(trial, [float(v) for v in values])  # type: ignore[arg-type]
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log(
            f"select: pilot {i + 1}/{len(queue)} [{point.origin}] {_label(params)}: {row['status']}, "
            f"AP {_fmt(row.get('ap'))}, trainable {_fmt(row.get('trainable_pct'), 3)}%, "
            f"latency {_fmt(row.get('latency_ms'))} ms"
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


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
) -> SelectionResult:
    """Measure the shift, run the warm-started pilot, decide, record, report (module docstring)."""
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
    pilot = pilot_matrix(settings.pilot, lr=settings.lr, iterations=settings.iterations)
    queue = warm_start_queue(pilot, warm, iterations=settings.iterations)
    if neighbours:
        log(
            "select: nearest earlier domains: "
            + ", ".join(f"{n.domain} ({n.distance:.3f})" for n in neighbours)
        )

    # 3. the pilot, as a small enqueued study.
    sweep_id = f"select-{uuid.uuid4().hex[:8]}"
    runner = run_point or trial_runner(settings)
    from search.results.store import ResultStore

    store = ResultStore(out / "results")
    # Each finished trial is stored at once: an interrupted selection keeps what it measured.
    records = _run_pilot(queue, runner, domain, sweep_id, log, on_row=lambda row: store.upsert_trials([row]))
    record_domain_stats(out, domain, target_stats, feature_key=key, source=f"select {data_json}")

    # 4. decision.
    decision = decide(records, settings.budgets)
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
    )
    from models.data.coco import atomic_write_json

    atomic_write_json(out / "selection.json", result.to_dict())
    if write_report:
        from search.selection.report import write_selection_report

        write_selection_report(result)
    return result
