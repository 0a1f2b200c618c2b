"""``peftsweep launch CONFIG --address ray://HOST:PORT|HOST:PORT|auto``: a sweep on an existing cluster.

The sweep is exactly the one ``peftsweep run`` runs (:func:`search.engine.runner.run_sweep`); only the
Ray it attaches to differs. What the cluster needs (see cluster/README.md):

* ``output_dir`` (Tune experiment state, trial checkpoints, the Parquet store) on storage every
  node and the driver see at the same path (NFS/EFS/Filestore mount, a ReadWriteMany volume);
* token authentication: ``--token-file`` (or ``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH`` /
  ``RAY_AUTH_TOKEN`` in the environment) carrying the cluster's token;
* trials ask for ``budget.gpus_per_trial`` GPUs (fractions pack several trials on one GPU) and
  ``budget.cpus_per_trial`` CPUs; ``--gpus-per-trial`` / ``--cpus-per-trial`` override them.

If the driver goes away (Ctrl-C, lost connection, killed), ``peftsweep launch CONFIG --address ...
--resume`` (or ``peftsweep resume OUTPUT_DIR --address ...``) reattaches: finished trials are kept,
unfinished ones continue from their last checkpoint. ``--resume`` on a fresh output_dir starts the
sweep, so a resubmitted job (KubeRay ``backoffLimit``) can always pass it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.errors import UserError

__all__ = ["add_launch_arguments", "run_launch"]


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep YAML (the same file `peftsweep run` takes)")
    parser.add_argument(
        "--address",
        required=True,
        help="'ray://HOST:PORT' (Ray Client), 'HOST:PORT' (head GCS) or 'auto' (on a node)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        help="the cluster's Ray auth token file (default: RAY_AUTH_TOKEN_PATH / "
        "RAY_AUTH_TOKEN / ~/.ray/auth_token)",
    )
    parser.add_argument(
        "--output-dir", default=None, help="override output_dir: a path on storage shared by every node"
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="override budget.gpus_per_trial (0.5 = two trials per GPU)",
    )
    parser.add_argument("--cpus-per-trial", type=float, default=None, help="override budget.cpus_per_trial")
    parser.add_argument("--concurrency", type=int, default=None, help="override budget.concurrency")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="override budget.max_failures (retries of a trial, from its last checkpoint)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reattach to the sweep in output_dir if there is one (else start it): "
        "finished trials are kept, unfinished ones continue from their checkpoints",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress lines")


def _budget_overrides(args: argparse.Namespace) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    checks = (
        ("gpus_per_trial", args.gpus_per_trial, 0.0, "--gpus-per-trial"),
        ("cpus_per_trial", args.cpus_per_trial, 1e-9, "--cpus-per-trial"),
        ("concurrency", args.concurrency, 1, "--concurrency"),
        ("max_failures", args.max_failures, 0, "--max-failures"),
    )
    for key, value, low, flag in checks:
        if value is None:
            continue
        if value < low:
            raise UserError(f"{flag}: must be >= {low:g}, got {value}")
        out[key] = value
    gpus = out.get("gpus_per_trial")
    if gpus is not None and gpus > 1 and gpus != int(gpus):
        raise UserError(f"--gpus-per-trial: above 1 a trial takes whole GPUs, got {gpus}")
    return out


def run_launch(args: argparse.Namespace) -> int:
    from search.cluster.connect import check_reachable, token_auth

    address = check_reachable(args.address)  # before anything is written
    with token_auth(args.token_file):
        return _launch(args, address)


def _launch(args: argparse.Namespace, address: str) -> int:
    from search.cluster.storage import is_remote_uri
    from search.config import load_config
    from search.results.sweep_files import load_sweep

    config = load_config(args.config)
    if args.output_dir:
        config = config.model_copy(update={"output_dir": args.output_dir})
    if is_remote_uri(config.output_dir):
        raise UserError(
            f"output_dir {config.output_dir!r}: must be a path on a filesystem shared by every "
            "node (object-store URIs are accepted for data and base checkpoints, not the output)"
        )
    out = Path(config.output_dir).resolve()
    resume = bool(args.resume) and (out / "sweep.json").exists()
    if resume:
        # Reattach with the config the sweep was started with (its search space must not change).
        config, _ = load_sweep(out)
    config = config.model_copy(update={"output_dir": str(out)})
    overrides = _budget_overrides(args)
    if overrides:
        config = config.model_copy(update={"budget": config.budget.model_copy(update=overrides)})

    from search.cli.sweep import print_fronts, run_and_record

    res = run_and_record(config, address=address, resume=resume, quiet=args.quiet, report=not args.no_report)
    print_fronts(res.fronts, output_dir=res.output_dir)
    print(
        f"sweep {res.sweep_id}: {len(res.trials)} trials in {res.seconds:.0f}s on {args.address} "
        f"-> {res.output_dir}"
    )
    return 0
