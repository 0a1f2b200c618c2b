"""Run (or resume) a sweep: one Ray Tune experiment + Optuna study per domain.

Output folder layout (``config.output_dir``):

- ``sweep.yaml`` (the validated config), ``sweep.json`` (sweep id, creation time);
- ``results/trials.parquet`` and ``results/intermediate.parquet`` (:mod:`search.results.store`);
- ``tune/<domain>/`` (the Tune experiment: searcher state, trial checkpoints; used by resume);
- ``state/scheduler-<domain>.json`` (MO-ASHA rung records), ``state/latency.json`` (latency per
  deployed architecture and device, :mod:`search.engine.latency_cache`);
- ``fronts.json`` (per-domain Pareto fronts, hypervolume and reference point).

:func:`run_sweep` starts an embedded Ray (``ray.init(address="local")``) unless ``address`` names
a cluster or Ray is already initialised. Resume (``resume=True``) restores each domain's
experiment with ``Tuner.restore(resume_unfinished=True)``: finished trials are not redone,
interrupted ones continue from their checkpoints, and the store's upserts keep one row per trial.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from models.errors import UserError
from search.config import SweepConfig, dump_config
from search.results.pareto import FrontResult
from search.results.store import ResultStore
from search.results.sweep_files import atomic_write_text, fronts_for, sweep_meta, write_fronts

logger = logging.getLogger(__name__)

__all__ = ["SweepResult", "run_sweep", "ensure_ray"]


@dataclass
class SweepResult:
    output_dir: Path
    sweep_id: str
    fronts: dict[str, FrontResult]
    trials: pd.DataFrame
    seconds: float


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray if needed; True when this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": never attach to a leftover cluster named in <temp-dir>/ray_current_cluster.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
        )
    return True


def _prepare_output(config: SweepConfig, resume: bool) -> tuple[Path, str]:
    out = Path(config.output_dir).resolve()
    if resume:
        meta = sweep_meta(out)
        return out, str(meta["sweep_id"])
    if (out / "sweep.json").exists():
        raise UserError(
            f"output_dir {out} already holds a sweep; use 'peftsweep resume {out}' or another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    sweep_id = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    atomic_write_text(out / "sweep.yaml", dump_config(config))
    atomic_write_text(
        out / "sweep.json", json.dumps({"sweep_id": sweep_id, "created": time.time(), "schema_version": 1})
    )
    return out, sweep_id


def _run_domain(
    config: SweepConfig,
    out: Path,
    sweep_id: str,
    domain_index: int,
    resume: bool,
    quiet: bool,
    wandb_live: bool = False,
) -> None:
    from ray import tune

    from search.engine.callbacks import StoreCallback, trial_row
    from search.engine.mo_asha import MOASHAScheduler
    from search.engine.samplers import TruthfulOptunaSearch, make_sampler
    from search.engine.space import SearchSpace
    from search.engine.trainable import TrialContext, run_tune_trial

    domain = config.domains[domain_index]
    constraints = [c.model_dump() for c in config.constraints]
    ctx = TrialContext(
        sweep_id=sweep_id,
        domain=domain.model_dump(),
        model=config.model.model_dump(),
        trial=config.trial.model_dump(),
        constraints=constraints,
        sampler=config.sampler.name,
        work_dir=str(out / "work" / domain.name),
        store_root=str(out / "results"),
        latency_cache=config.trial.latency_per_architecture,
    )
    resources = {"cpu": config.budget.cpus_per_trial, "gpu": config.budget.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_tune_trial, context=ctx), resources)
    storage = out / "tune"
    exp_path = storage / domain.name
    store_root = str(out / "results")
    callbacks: list[Any] = [
        StoreCallback(
            store_root,
            sweep_id,
            domain.name,
            config.sampler.name,
            config.budget.trials,
            quiet=quiet,
            scheduler_state=str(out / "state" / f"scheduler-{domain.name}.json"),
        )
    ]
    if wandb_live:
        from search.engine.callbacks import WandbCallback

        callbacks.append(WandbCallback(sweep_id, domain.name))  # after StoreCallback: reads its rows

    if resume and tune.Tuner.can_restore(str(exp_path)):
        tuner = tune.Tuner.restore(
            str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        seed = config.sampler.seed + domain_index  # distinct but reproducible per domain
        sampler = make_sampler(
            config.sampler.name,
            seed,
            constraints,
            population_size=config.sampler.population_size,
            startup_trials=config.sampler.startup_trials,
        )
        searcher = TruthfulOptunaSearch(
            space=SearchSpace(config.space),
            metric=config.metric_names,
            mode=config.modes,
            sampler=sampler,
            study_name=f"{sweep_id}-{domain.name}",
            points_to_evaluate=[dict(p) for p in config.sampler.initial_points] or None,
            constraint_metrics=[c.metric for c in config.constraints],
        )
        scheduler = None
        if config.early_stopping.enabled:
            scheduler = MOASHAScheduler(
                config.metric_names,
                config.modes,
                time_attr="iteration",
                grace=config.early_stopping.grace_iterations,
                eta=config.early_stopping.reduction_factor,
                max_t=max(config.space.iterations),
                state_path=out / "state" / f"scheduler-{domain.name}.json",
            )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=config.budget.trials,
                max_concurrent_trials=config.budget.concurrency,
                time_budget_s=config.budget.time_limit_s,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=domain.name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=config.budget.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]

    # Reconcile: every trial Tune knows ends with exactly one final row (the callback normally wrote
    # it; this covers a driver that died between a trial's end and the callback's write).
    store = ResultStore(store_root)
    have = store.trials()
    done = set(have.loc[have["status"] != "running", "trial_id"]) if len(have) else set()
    known = {str((r.metrics or {}).get("trial_id")) for r in results}
    # A trial started after Tune's last snapshot of a killed driver is unknown to the restored
    # experiment (its searcher never asked for it): its 'running' row belongs to no trial.
    if len(have):
        mine = have[(have["domain"] == domain.name) & (have["status"] == "running")]
        store.delete_trials([t for t in mine["trial_id"] if t not in known])
    rows = []
    for res in results:
        metrics = dict(res.metrics or {})
        tid = metrics.get("trial_id")
        if not tid or tid in done:
            continue
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        rows.append(
            trial_row(
                str(tid),
                dict(res.config or {}),
                metrics or None,
                sweep_id=sweep_id,
                domain=domain.name,
                sampler=config.sampler.name,
                error=err,
            )
        )
    store.upsert_trials(rows)


def run_sweep(
    config: SweepConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    report: bool = True,
) -> SweepResult:
    """Run every domain's experiment, then write fronts.json (and the report unless report=False)."""
    t0 = time.time()
    # Infeasible trials end before they have an AP; Tune must not treat that as a broken trial.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Each trial checkpoints every report (so retries resume): keep Tune's snapshot warning quiet.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    out, sweep_id = _prepare_output(config, resume)
    wandb_logger = None
    if config.wandb.enabled:
        from search.results.wandb_log import SweepLogger, activate

        wandb_logger = SweepLogger(out, config, sweep_id)
        if wandb_logger.enabled:
            activate(wandb_logger)
        else:
            wandb_logger = None
    try:
        started = ensure_ray(address)
        try:
            cache = None
            latency_file = out / "state" / "latency.json"
            if config.trial.latency_per_architecture:
                from search.engine.latency_cache import save_latency_cache, start_latency_cache

                cache = start_latency_cache(sweep_id, latency_file)
            for i in range(len(config.domains)):
                _run_domain(config, out, sweep_id, i, resume, quiet, wandb_live=wandb_logger is not None)
                if cache is not None:
                    save_latency_cache(cache, latency_file)
            if cache is not None:
                import ray

                ray.kill(cache)  # a later resume in this Ray session starts it again from the file
        finally:
            if started:
                import ray

                ray.shutdown()
        result = _finish_sweep(config, out, sweep_id, report, wandb_logger)
    finally:
        if wandb_logger is not None:
            from search.results.wandb_log import deactivate

            wandb_logger.close()
            deactivate(sweep_id)
    return SweepResult(out, sweep_id, *result, seconds=time.time() - t0)


def _finish_sweep(
    config: SweepConfig, out: Path, sweep_id: str, report: bool, wandb_logger: Any
) -> tuple[dict[str, FrontResult], pd.DataFrame]:
    """After the last domain: fronts.json, the report, the W&B summary."""
    trials = ResultStore(out / "results").trials()
    fronts = fronts_for(config, trials)
    write_fronts(out, fronts)
    if report:
        from search.results.report import write_report

        write_report(out)
    if wandb_logger is not None:
        try:
            if wandb_logger.failed:  # live logging stopped on an error: one more try, from the store
                from search.results.wandb_log import SweepLogger

                wandb_logger = SweepLogger(out, config, sweep_id)
            wandb_logger.finish()
        except Exception as exc:  # noqa: BLE001 - the sweep's results are safe in the store
            logger.warning(
                "W&B summary failed (%s: %s); write it later with 'peftsweep report %s --wandb'",
                type(exc).__name__,
                exc,
                out,
            )
    return fronts, trials
