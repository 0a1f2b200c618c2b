"""``peftsweep pareto OUT [--json]``, ``peftsweep report OUT`` and ``peftsweep status OUT [--json]``."""

from __future__ import annotations

import argparse
import json

__all__ = [
    "add_pareto_arguments",
    "run_pareto",
    "add_report_arguments",
    "run_report",
    "add_status_arguments",
    "run_status",
]


def add_pareto_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="a sweep output folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--objectives", help="comma-separated subset of the sweep's objectives, e.g. ap,latency_ms"
    )
    parser.add_argument("--domain", help="only this domain")


def run_pareto(args: argparse.Namespace) -> int:
    from models.errors import UserError
    from search.cli.sweep import print_fronts
    from search.results.pareto import compute_fronts
    from search.results.store import ResultStore
    from search.results.sweep_files import load_sweep, store_root_of

    config, _ = load_sweep(args.output_dir)
    trials = ResultStore(store_root_of(args.output_dir)).trials()
    objs = {o.name: o for o in config.objectives}
    names = [n.strip() for n in args.objectives.split(",")] if args.objectives else list(objs)
    bad = [n for n in names if n not in objs]
    if bad or not names:
        raise UserError(f"--objectives: unknown {bad[0] if bad else '(empty)'!r}; allowed: {', '.join(objs)}")
    if args.domain:
        if args.domain not in {d.name for d in config.domains}:
            raise UserError(
                f"--domain: {args.domain!r} is not in the sweep; allowed: "
                f"{', '.join(d.name for d in config.domains)}"
            )
        trials = trials[trials["domain"] == args.domain]
    fronts = compute_fronts(
        trials, names, [objs[n].mode for n in names], [objs[n].ref for n in names], config.constraints
    )
    if args.json:
        print(json.dumps({k: f.to_json() for k, f in fronts.items()}, indent=1, default=str))
    else:
        print_fronts(fronts)
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="a sweep output folder")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also write the W&B runs still missing (every trial not yet logged) and the summary run, "
        "with the sweep's W&B settings (offline without WANDB_API_KEY)",
    )


def run_report(args: argparse.Namespace) -> int:
    from search.results.interactive import write_interactive
    from search.results.report import write_report

    print(write_report(args.output_dir))
    print(write_interactive(args.output_dir))
    if args.wandb:
        from search.results.sweep_files import load_sweep
        from search.results.wandb_log import log_sweep

        config, _ = load_sweep(args.output_dir)
        if config.wandb.mode == "disabled":
            config = config.model_copy(update={"wandb": config.wandb.model_copy(update={"mode": "auto"})})
        ids = log_sweep(args.output_dir, config)
        print(f"W&B: wrote {len(ids) - 1} trial run(s) and the summary run {ids[-1]}")
    return 0


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="a sweep output folder (running or finished)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_status(args: argparse.Namespace) -> int:
    from search.results.status import format_status, sweep_status

    status = sweep_status(args.output_dir)
    if args.json:
        print(json.dumps(status.to_json(), indent=1, default=str))
    else:
        print(format_status(status))
    return 0
