"""`peftsweep select` end to end: shift -> warm-started pilot -> decision -> records -> report.

Output folder (``out_dir``), laid out like a sweep's so a selection is itself an "earlier
sweep" for later selections (pass it with ``--history``)::

    results/trials.parquet   the pilot trials (search.store.ResultStore schema)
    domain_stats/            the new domain's feature statistics (search.similarity)
    selection.json           the machine-readable result (also printed with --json)
    report.md, report.html   the decision report (search.select_report)

The pilot runs in this process, one trial after the other, through an Optuna study whose queue
is filled with ``enqueue_trial`` (neighbours' best configurations first, then the pilot
matrix); each trial is ``models.trial.run_trial``. A selection is a handful of trials, so Ray's
start-up and scheduling would cost more than they save.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import UserError
from search.select import Budgets, Decision, decide
from search.select_warmstart import (
    DEFAULT_PILOT,
    WarmPoint,
    enqueue_points,
    neighbour_points,
    parse_pilot,
    pilot_matrix,
    point_distributions,
    warm_start_queue,
)
from search.shift import (
    FeatureStats,
    ShiftResult,
    feature_stats,
    frechet_distance,
    load_coco_images,
    measure_shift,
    pooled_backbone_features,
)
from search.similarity import (
    Neighbour,
    feature_key_for,
    list_domain_stats,
    load_domain_stats,
    nearest_domains,
    record_domain_stats,
)

__all__ = [
    "SelectionSettings",
    "SelectionResult",
    "RunPoint",
    "build_feature_model",
    "synthetic_images",
    "pretraining_domain",
    "domain_stats_from_images",
    "run_selection",
    "trial_runner",
    "record_sweep_domains",
]

RunPoint = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class SelectionSettings:
    """Inputs of one selection. ``trial_overrides`` go straight into ``models.trial.TrialSpec``."""

    data_json: str
    images_dir: str
    budgets: Budgets
    out_dir: str = "runs/select"
    model: str = "maskdino_tiny"
    base_checkpoint: str | None = None
    domain_name: str | None = None  # default: the json's file stem (parent folder for annotations.json)
    history: list[str] = field(default_factory=list)
    reference_domain: str | None = None  # default: the base checkpoint's pretraining domain, else source
    neighbours: int = 2
    shift_images: int = 64
    image_size: int = 128
    iterations: int = 40
    lr: float = 1e-3
    pilot: str = DEFAULT_PILOT  # see search.select_warmstart.parse_pilot
    eval_json: str | None = None
    eval_images: str | None = None
    seed: int = 0
    device: str = "auto"
    trial_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_domain_name(self) -> str:
        if self.domain_name:
            return self.domain_name
        p = Path(self.data_json)
        return p.parent.name if p.stem == "annotations" and p.parent.name else p.stem


@dataclass
class SelectionResult:
    domain: str
    reference_domain: str
    shift: ShiftResult
    neighbours: list[Neighbour]
    queue: list[WarmPoint]
    records: list[dict[str, Any]]
    decision: Decision
    out_dir: Path
    feature_key: str
    seconds: float
    known_shifts: dict[str, float] = field(default_factory=dict)  # earlier domain -> Fréchet from reference

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (plain JSON types; NaN -> null)."""
        return _clean(
            {
                "domain": self.domain,
                "reference_domain": self.reference_domain,
                "shift": self.shift.to_dict(),
                "neighbours": [{"domain": n.domain, "distance": n.distance} for n in self.neighbours],
                "queue": [{"origin": w.origin, "params": w.params} for w in self.queue],
                "pilot": self.records,
                "decision": self.decision.to_dict(),
                "out_dir": str(self.out_dir),
                "feature_key": self.feature_key,
                "known_shifts": self.known_shifts,
                "seconds": self.seconds,
            }
        )


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        return _clean(obj.item())
    return obj


# ----------------------------------------------------------------------------------------- features


def build_feature_model(model_name: str, base_checkpoint: str | None, device: str = "cpu") -> Any:
    """The base model whose backbone defines the feature space (class count is irrelevant here)."""
    import torch

    import models

    torch.manual_seed(0)  # a random-init backbone (no base) must still be the same every time
    model = models.build_model(model_name, 1)  # type: ignore[attr-defined]
    if base_checkpoint:
        from models.checkpoint import load_checkpoint

        load_checkpoint(model, base_checkpoint, num_classes=1)
    return model.to(device).eval()


def synthetic_images(domain: str, num: int, seed: int = 0, image_size: int = 128) -> list[Any]:
    """Images of a synthetic domain as uint8 (3, H, W) tensors (RGB)."""
    import torch

    from models.data.synthetic import generate_sample

    return [
        torch.from_numpy(generate_sample(domain, seed, i, image_size).image).permute(2, 0, 1).contiguous()
        for i in range(num)
    ]


def pretraining_domain(base_checkpoint: str | None) -> str:
    """The synthetic domain the base was pretrained on (``pretrain.json`` beside it), else ``source``."""
    if base_checkpoint:
        meta = Path(base_checkpoint).with_name("pretrain.json")
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                dom = (info.get("config") or {}).get("domain") or info.get("domain")
                if isinstance(dom, str) and dom:
                    return dom
            except (OSError, json.JSONDecodeError):
                pass
    return "source"


def domain_stats_from_images(model: Any, images: Sequence[Any], image_size: int = 128) -> FeatureStats:
    feats, levels = pooled_backbone_features(model, images, image_size=image_size)
    return feature_stats(feats, levels=levels)


def record_sweep_domains(
    output_dir: str | os.PathLike[str],
    domains: Sequence[Mapping[str, Any]],
    *,
    model_name: str,
    base_checkpoint: str | None,
    num_images: int = 64,
    image_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Record feature statistics of a sweep's domains under ``output_dir/domain_stats``.

    For a sweep to call when it finishes. ``domains``: dicts like :class:`search.config.DomainSpec`
    dumps (``name``, ``synthetic``, ``train_json``, ``train_images``). Returns the recorded names.
    """
    model = build_feature_model(model_name, base_checkpoint)
    done: list[str] = []
    for d in domains:
        name = str(d["name"])
        if d.get("synthetic", True):
            images = synthetic_images(name, num_images, seed, image_size)
        else:
            images = list(load_coco_images(str(d["train_json"]), str(d["train_images"]), limit=num_images))
        stats = domain_stats_from_images(model, images, image_size)
        key = feature_key_for(model_name, base_checkpoint, stats.levels)
        record_domain_stats(output_dir, name, stats, feature_key=key, source=f"sweep {output_dir}")
        done.append(name)
    return done


# ----------------------------------------------------------------------------------------- trials


def trial_runner(settings: SelectionSettings) -> RunPoint:
    """Default pilot executor: flat params -> ``models.trial.run_trial`` on the new domain -> row.

    The TrialSpec mapping is the sweep's own (:func:`search.model_trial.spec_dict`), so a pilot
    trial is exactly the trial a sweep would run for the same parameters.
    """
    from types import SimpleNamespace

    from search.model_trial import spec_dict

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
    from search.select import config_label

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
    from search.store import ResultStore

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
        from search.select_report import write_selection_report

        write_selection_report(result)
    return result
