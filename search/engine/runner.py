"""Run (or resume) a sweep: every study of every model and domain in ONE Ray Tune experiment.

A study is one (model, domain) pair (:meth:`search.config.SweepConfig.studies`); each has its own
Optuna study, MO-ASHA state, store rows (``study`` column), Pareto front, report section and W&B
group. :class:`search.engine.studies.StudyMux` shares the trial slots between the studies (fair
share by remaining budget, the global ``budget.concurrency``, a finished study's slots passed on).

Output folder layout (``config.output_dir``):

- ``sweep.yaml`` (the validated config), ``sweep.json`` (sweep id, creation time, store root);
- ``results/`` (:mod:`search.results.store`: append-only Parquet parts) unless ``results`` names
  another root (a shared path or an object-store URI);
- ``optuna/journal.log`` (every study's Optuna JournalStorage, unless ``sampler.storage`` names a
  database URL): ``optuna-dashboard OUT/optuna/journal.log``, ``optuna.load_study(...)``;
- ``tune/sweep/`` (the Tune experiment: searcher state, trial checkpoints; used by resume);
- ``state/scheduler-<study>.json`` (MO-ASHA rung records), ``state/latency.json`` (latency per
  deployed architecture and device, :mod:`search.engine.latency_cache`),
  ``state/latency_profile.json`` (the latency profile entries the sweep used,
  :mod:`search.engine.latency_profile`);
- ``fronts.json`` (per-study Pareto fronts, hypervolume and reference point), ``latency_check.json``
  (the fronts' members re-measured in isolation after the last trial).

Before the first trial the sweep's :class:`search.engine.gate.SweepGate` measures every deployed
architecture of the space in isolation on the latency target and gives each study's searcher its
gate: a point that breaks a constraint known before training (parameters, latency) is told to
Optuna at once, stored ``infeasible`` and never takes a slot (the budget counts trained trials).

:func:`run_sweep` starts an embedded Ray (``ray.init(address="local")``) unless ``address`` names
a cluster or Ray is already initialised. Everything the config names is checked before anything
is written (:func:`check_inputs`). Resume (``resume=True``) restores the experiment with
``Tuner.restore(resume_unfinished=True)``: finished trials are not redone, interrupted ones
continue from their checkpoints, each study's sampler history comes back from its Optuna storage,
and the store keeps one row per trial (latest version wins).
"""

from __future__ import annotations

import json
import logging
import os
import sys
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

__all__ = ["SweepResult", "run_sweep", "ensure_ray", "check_inputs", "store_root", "optuna_storage_url"]

EXPERIMENT = "sweep"  # the Tune experiment's name under OUT/tune/


@dataclass
class SweepResult:
    output_dir: Path
    sweep_id: str
    fronts: dict[str, FrontResult]
    trials: pd.DataFrame
    seconds: float


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray if needed; True when this call started it (the caller shuts it down).

    A process already connected to Ray keeps that connection; when ``address`` names another
    cluster's GCS (``HOST:PORT``) that is a UserError, not a silent run on the wrong cluster."""
    import ray

    if ray.is_initialized():
        if address and address != "auto" and not address.startswith("ray://"):
            current = ray.get_runtime_context().gcs_address
            if current and current != address:
                raise UserError(
                    f"--address {address}: this process is already connected to the Ray cluster at "
                    f"{current}; disconnect it (ray.shutdown()) first"
                )
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        from search.cluster.connect import check_reachable

        check_reachable(address)  # seconds, where ray.init would wait minutes for an absent GCS
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


def store_root(config: SweepConfig, out: Path) -> str:
    """The results store's root: ``config.results`` (path or URI) or ``OUT/results``."""
    return config.results or str(out / "results")


def optuna_storage_url(config: SweepConfig, out: Path) -> str:
    """``sampler.storage`` (a database URL) or the journal file in the output folder."""
    return config.sampler.storage or str(out / "optuna" / "journal.log")


def check_inputs(config: SweepConfig) -> None:
    """What must hold before a sweep writes anything: every local base checkpoint and dataset file
    the config names exists, and the store's root is reachable. One-line UserErrors name the field."""
    from models.registry import available_models

    known = available_models()
    for i, m in enumerate(config.model_entries()):
        where = f"models[{i}]" if config.models else "model"
        if m.name not in known:
            raise UserError(f"{where}.name: unknown model {m.name!r}; allowed: {', '.join(known)}")
        ck = m.base_checkpoint
        if ck and "://" not in ck and not Path(ck).exists():
            raise UserError(f"{where}.base_checkpoint: {ck}: no such file")
    for i, d in enumerate(config.domains):
        if d.synthetic:
            continue
        for key in ("train_json", "train_images", "eval_json", "eval_images"):
            v = getattr(d, key)
            if v and "://" not in v and not Path(v).exists():
                raise UserError(f"domains[{i}].{key}: {v}: no such file or folder")
    if config.results:
        ResultStore(config.results).check_reachable("results")


def _prepare_output(config: SweepConfig, resume: bool) -> tuple[Path, str]:
    out = Path(config.output_dir).resolve()
    if resume:
        meta = sweep_meta(out)
        return out, str(meta["sweep_id"])
    if (out / "sweep.json").exists():
        raise UserError(
            f"output_dir {out} already holds a sweep; use 'peftsweep resume {out}' or another folder"
        )
    check_inputs(config)
    out.mkdir(parents=True, exist_ok=True)
    sweep_id = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    atomic_write_text(out / "sweep.yaml", dump_config(config))
    meta = {
        "sweep_id": sweep_id,
        "created": time.time(),
        "schema_version": 2,
        "results": store_root(config, out),
        "studies": [s.name for s in config.studies()],
    }
    atomic_write_text(out / "sweep.json", json.dumps(meta))
    return out, sweep_id


def _trials_share_latency(config: SweepConfig) -> bool:
    """Whether trials read the sweep's latency cache actor: the model trial with the latency profile,
    or any trial function whose config asks for it by name (its first trial of an architecture
    measures, the others reuse that figure). A custom trial function is not switched to it by the
    default alone: its trials keep measuring themselves, as before the profile existed."""
    from search.engine.gate import uses_latency_profile

    explicit = "latency_per_architecture" in config.trial.model_fields_set
    return uses_latency_profile(config) or (explicit and config.trial.latency_per_architecture)


def study_contexts(config: SweepConfig, out: Path, sweep_id: str) -> dict[str, Any]:
    """Every study's ``TrialContext`` (what its trials share)."""
    from search.engine.trainable import TrialContext

    constraints = [c.model_dump() for c in config.constraints]
    return {
        s.name: TrialContext(
            sweep_id=sweep_id,
            domain=s.domain.model_dump(),
            model=s.model.model_dump(exclude={"label", "trials", "extra"}),
            trial={**config.trial.model_dump(), "extra": {**config.trial.extra, **s.model.extra}},
            constraints=constraints,
            sampler=config.sampler.name,
            work_dir=str(out / "work" / s.name),
            store_root=store_root(config, out),
            latency_cache=_trials_share_latency(config),
        )
        for s in config.studies()
    }


def sweep_gate(config: SweepConfig, out: Path, sweep_id: str) -> Any:
    """The sweep's :class:`search.engine.gate.SweepGate` (constraints and latency before a slot)."""
    from search.engine.gate import SweepGate

    labels = {s.name: (s.domain.name, s.label) for s in config.studies()}
    return SweepGate(
        config, out, sweep_id, study_contexts(config, out, sweep_id), store_root(config, out), labels
    )


def _check_latency_device(config: SweepConfig, address: str | None, quiet: bool) -> bool:
    """A named latency device must be offered by some node: checked before the output folder is
    written (UserError otherwise). Returns whether this call started Ray."""
    from search.engine.gate import uses_latency_profile
    from search.engine.latency_profile import resolve_target
    from search.engine.progress import quiet_libraries

    if not (config.trial.latency_device and uses_latency_profile(config)):
        return False
    with quiet_libraries(quiet):  # Ray's start-up lines (the sweep's display is not up yet)
        started = ensure_ray(address)
    try:
        resolve_target(
            config.trial.latency_device,
            config.budget.gpus_per_trial > 0,
            int(max(1, config.budget.cpus_per_trial)),
        )
    except UserError:
        if started:
            import ray

            ray.shutdown()
        raise
    return started


def _tuner(
    config: SweepConfig,
    out: Path,
    sweep_id: str,
    resume: bool,
    quiet: bool,
    wandb_live: bool,
    client_mode: bool,
    gate: Any,
) -> Any:
    from ray import tune

    from search.engine.callbacks import StoreCallback, WandbCallback
    from search.engine.mo_asha import MOASHAScheduler
    from search.engine.progress import ProgressCallback
    from search.engine.studies import (
        SearcherFactory,
        StudyCallbacks,
        StudyMux,
        StudyScheduler,
        StudySpec,
        run_study_trial,
    )

    studies = config.studies()
    constraints = [c.model_dump() for c in config.constraints]
    root = store_root(config, out)
    contexts = gate.contexts
    resources = {"cpu": config.budget.cpus_per_trial, "gpu": config.budget.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_study_trial, contexts=contexts), resources)
    storage = out / "tune"
    exp_path = storage / EXPERIMENT
    snapshots = out / "state" / "tune"  # complete copies of Tune's experiment snapshots
    if resume:
        from search.engine.experiment_state import repair_snapshots

        repair_snapshots(exp_path, snapshots)  # one cut off by the driver's death
        if tune.Tuner.can_restore(str(exp_path)):
            return tune.Tuner.restore(
                str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=False
            )

    per_study: dict[str, list[Any]] = {}
    for s in studies:
        cbs: list[Any] = [
            StoreCallback(
                root,
                sweep_id,
                s.domain.name,
                config.sampler.name,
                s.trials,
                quiet=quiet,
                scheduler_state=str(out / "state" / f"scheduler-{s.name}.json"),
                study=s.name,
                model=s.label,
            )
        ]
        if wandb_live:  # after StoreCallback: reads its rows
            cbs.append(WandbCallback(sweep_id, s.name, out=str(out) if client_mode else None))
        per_study[s.name] = cbs
    specs = [StudySpec(s.name, s.label, s.domain.name, s.trials, s.index) for s in studies]
    factory = SearcherFactory(
        sweep_id=sweep_id,
        space=config.space,
        metrics=config.metric_names,
        modes=config.modes,
        sampler=config.sampler.name,
        seed=config.sampler.seed,
        population_size=config.sampler.population_size,
        startup_trials=config.sampler.startup_trials,
        constraints=constraints,
        initial_points=[dict(p) for p in config.sampler.initial_points],
        storage_url=optuna_storage_url(config, out),
        gate=gate if gate.active else None,
    )
    searcher = StudyMux(
        specs,
        factory,
        concurrency=config.budget.concurrency,
        total_trials=config.budget.total_trials,
        metric=config.metric_names,
        mode=config.modes,
    )
    searcher.snapshot_backup = str(snapshots)
    scheduler = None
    if config.early_stopping.enabled:
        scheduler = StudyScheduler(
            {
                s.name: MOASHAScheduler.from_config(
                    config.metric_names,
                    config.modes,
                    config.early_stopping,
                    max(config.space.iterations),
                    time_attr="iteration",
                    state_path=out / "state" / f"scheduler-{s.name}.json",
                )
                for s in studies
            }
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=sum(s.trials for s in studies),
            max_concurrent_trials=config.budget.concurrency,
            time_budget_s=config.budget.time_limit_s,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=config.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # ProgressCallback: one row per study; also Tune's banner reporter (see engine.progress)
            callbacks=[StudyCallbacks(per_study), ProgressCallback(sweep_id)],
            verbose=0,
        ),
    )


def _reconcile(config: SweepConfig, out: Path, sweep_id: str, results: list[Any]) -> None:
    """Every trial Tune knows ends with exactly one final row (the callback normally wrote it; this
    covers a driver that died between a trial's end and the callback's write)."""
    from search.engine.callbacks import trial_row
    from search.engine.studies import STUDY_KEY

    by_name = {s.name: s for s in config.studies()}
    store = ResultStore(store_root(config, out))
    have = store.trials()
    done = set(have.loc[have["status"] != "running", "trial_id"]) if len(have) else set()
    known = {str((r.metrics or {}).get("trial_id")) for r in results}
    # A trial started after Tune's last snapshot of a killed driver is unknown to the restored
    # experiment (its searcher never asked for it): its 'running' row belongs to no trial.
    if len(have):
        store.delete_trials([t for t in have.loc[have["status"] == "running", "trial_id"] if t not in known])
    rows = []
    for res in results:
        metrics = dict(res.metrics or {})
        tid = metrics.get("trial_id")
        cfg = dict(res.config or {})
        study = by_name.get(str(cfg.get(STUDY_KEY)))
        if not tid or tid in done or study is None:
            continue
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        rows.append(
            trial_row(
                str(tid),
                cfg,
                metrics or None,
                sweep_id=sweep_id,
                domain=study.domain.name,
                sampler=config.sampler.name,
                error=err,
                study=study.name,
                model=study.label,
            )
        )
    store.upsert_trials(rows)


def _close_orphans(config: SweepConfig, out: Path, sweep_id: str) -> int:
    """After the experiment: Optuna trials still RUNNING belong to no live trial (a killed driver
    asked for them after Tune's last snapshot); tell them FAIL so the storage says what happened."""
    import optuna
    from optuna.trial import TrialState

    from search.engine.studies import optuna_storage

    storage = optuna_storage(optuna_storage_url(config, out))
    closed = 0
    for s in config.studies():
        try:
            study = optuna.load_study(study_name=f"{sweep_id}-{s.name}", storage=storage)
        except KeyError:
            continue  # the study never started a trial
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            closed += 1
    return closed


def _client_mode(address: str | None) -> bool:
    return bool(address and address.startswith("ray://"))


def run_sweep(
    config: SweepConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    report: bool = True,
) -> SweepResult:
    """Run every study in one Tune experiment, then write fronts.json (and the report unless
    report=False)."""
    t0 = time.time()
    # Infeasible trials end before they have an AP; Tune must not treat that as a broken trial.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Each trial checkpoints every report (so retries resume): keep Tune's snapshot warning quiet.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_started = False if resume else _check_latency_device(config, address, quiet)
    out, sweep_id = _prepare_output(config, resume)
    client = _client_mode(address)
    wandb_logger = None
    if config.wandb.enabled:
        from search.results.wandb_log import SweepLogger, activate

        wandb_logger = SweepLogger(out, config, sweep_id)
        if wandb_logger.enabled:
            activate(wandb_logger)
            if client:
                # Under Ray Client the Tuner (and its callbacks) runs on the head node, where this
                # process's logger does not exist: the callbacks open their own there.
                print(
                    "peftsweep: W&B under Ray Client: trial runs are logged live from the head node "
                    f"into {out / 'wandb'} (a folder the head must see); any run it cannot write is "
                    "written from the store when the sweep ends",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            wandb_logger = None
    from search.engine.progress import start_display

    stop_display = start_display(out, config, sweep_id, quiet)  # rows per study; quiet: Ray's logs off too
    try:
        started = ensure_ray(address) or ray_started
        try:
            from search.engine.latency_cache import save_latency_cache, start_latency_cache

            cache = None
            latency_file = out / "state" / "latency.json"
            gate = sweep_gate(config, out, sweep_id)
            # The latency profile (every architecture of the space measured in isolation on the
            # target device) and each study's constraint gate, before any trial holds a device.
            gate.prepare()
            latency = gate.latency() if gate.active else None
            if latency is not None:
                cache = latency.actor
            elif _trials_share_latency(config):
                cache = start_latency_cache(sweep_id, latency_file)
            # Tune's new output engine appends a reporter of its own after ours and gives only the
            # first one its start time: the other then crashes on a retried trial (Ray 2.60). The
            # legacy engine at verbose=0 prints nothing, and our ProgressCallback shows the rows.
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
            tuner = _tuner(config, out, sweep_id, resume, quiet, wandb_logger is not None, client, gate)
            grid = tuner.fit()
            _reconcile(config, out, sweep_id, [grid[i] for i in range(len(grid))])
            _close_orphans(config, out, sweep_id)
            if latency is not None:
                _remeasure(config, out, gate, latency)
            if cache is not None:
                import ray

                save_latency_cache(cache, latency_file)
                ray.kill(cache)  # a later resume in this Ray session starts it again from the file
        finally:
            if started:
                import ray

                ray.shutdown()
        result = _finish_sweep(config, out, sweep_id, report, wandb_logger, client)
    finally:
        stop_display()
        if wandb_logger is not None:
            from search.results.wandb_log import deactivate

            wandb_logger.close()
            deactivate(sweep_id)
    return SweepResult(out, sweep_id, *result, seconds=time.time() - t0)


def _remeasure(config: SweepConfig, out: Path, gate: Any, latency: Any) -> None:
    """The final fronts' members timed again in isolation (``OUT/latency_check.json``, for the
    report); the profile entries the sweep used copied into its own profile file."""
    from search.engine.gate import remeasure_fronts

    gate.save_profile()
    fronts = fronts_for(config, ResultStore(store_root(config, out)).trials())
    try:
        remeasure_fronts(fronts, gate.contexts, latency, out)
    except Exception as exc:  # noqa: BLE001 - a failed check must not lose the sweep's results
        logger.warning("re-measuring the fronts' latency failed: %s: %s", type(exc).__name__, exc)


def _finish_sweep(
    config: SweepConfig, out: Path, sweep_id: str, report: bool, wandb_logger: Any, client: bool = False
) -> tuple[dict[str, FrontResult], pd.DataFrame]:
    """After the experiment: compact the store, fronts.json, the report, the W&B summary."""
    store = ResultStore(store_root(config, out))
    store.compact()
    trials = store.trials()
    fronts = fronts_for(config, trials)
    write_fronts(out, fronts)
    if report:
        from search.results.report import write_report

        write_report(out)
    live_off = out / "wandb" / "live_off.txt"
    if wandb_logger is not None and live_off.exists():  # the head node could not log (Ray Client)
        print(f"peftsweep: {live_off.read_text().strip()}", file=sys.stderr, flush=True)
    if wandb_logger is not None:
        try:
            if wandb_logger.failed or client:
                # Live logging stopped on an error, or ran in another process (Ray Client): the
                # ledger on disk says what is logged; write the rest from the store.
                from search.results.wandb_log import SweepLogger

                wandb_logger = SweepLogger(out, config, sweep_id)
            missing = set(trials["trial_id"]) - wandb_logger.logged if len(trials) else set()
            if missing and (client or wandb_logger.failed):
                print(
                    f"peftsweep: W&B: {len(missing)} trial runs were not logged live; writing them "
                    "from the store now",
                    file=sys.stderr,
                    flush=True,
                )
            wandb_logger.finish()
        except Exception as exc:  # noqa: BLE001 - the sweep's results are safe in the store
            logger.warning(
                "W&B summary failed (%s: %s); write it later with 'peftsweep report %s --wandb'",
                type(exc).__name__,
                exc,
                out,
            )
    return fronts, trials
