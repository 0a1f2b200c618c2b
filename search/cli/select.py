"""``peftsweep select``: pick a PEFT method for a new domain automatically.

Exit status: 0 when a method meets the budgets, 3 (:data:`search.selection.decision.EXIT_INFEASIBLE`) when
none does (the closest one is named), 4 (:data:`search.selection.learned.EXIT_NOTHING_LEARNED`) when
no pilot learned anything (best AP at or near 0, or within noise of the untrained model; the likely
causes are named and nothing is picked), 2 for bad input (:class:`models.errors.UserError`).
With ``--json`` the machine-readable result goes to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_select_arguments", "run_select"]


def add_select_arguments(parser: argparse.ArgumentParser) -> None:
    from search.selection.halving import DEFAULT_PROMOTE_BY, PROMOTE_BY  # light: no torch

    parser.add_argument(
        "--data", required=True, metavar="NEW.json", help="COCO instance json of the new domain"
    )
    parser.add_argument("--images", required=True, metavar="DIR", help="image folder of --data")
    parser.add_argument(
        "--model", default="maskdino_tiny", help="registered model config (default: %(default)s)"
    )
    parser.add_argument("--base", metavar="CKPT", default=None, help="pretrained base checkpoint")
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        default=None,
        metavar="X",
        help="max deployed inference latency per image (ms); unchecked when absent",
    )
    parser.add_argument(
        "--param-budget-pct",
        type=float,
        default=None,
        metavar="Y",
        help="max trainable share of all parameters (%%); unchecked when absent",
    )
    parser.add_argument(
        "--min-ap-fraction",
        type=float,
        default=0.9,
        metavar="F",
        help="required AP as a fraction of the best pilot AP (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: runs/select/<domain>)"
    )
    parser.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    parser.add_argument(
        "--history",
        action="append",
        default=[],
        metavar="DIR",
        help="earlier sweep/selection output folder to warm-start from (repeatable)",
    )
    parser.add_argument("--domain-name", default=None, help="name recorded for the new domain")
    parser.add_argument("--eval-data", default=None, metavar="JSON", help="separate evaluation json")
    parser.add_argument("--eval-images", default=None, metavar="DIR", help="image folder of --eval-data")
    parser.add_argument(
        "--reference-domain",
        default=None,
        help="synthetic domain standing for the pretraining data (default: from the base's "
        "pretrain.json, else 'source')",
    )
    parser.add_argument(
        "--pilot",
        default=None,
        metavar="LIST",
        help="pilot matrix, e.g. 'lora:4,lora:8,adapter:2,adapter:3,full_head' (the default)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=40,
        help="training iterations of a pilot trial that goes the whole way",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the pilot trials")
    parser.add_argument(
        "--lrs",
        default=None,
        metavar="LIST",
        help="several pilot learning rates, e.g. 1e-3,3e-3 (default: --lr)",
    )
    parser.add_argument(
        "--rungs",
        type=int,
        default=3,
        help="successive halving: candidates train --iterations/eta^k, the best 1/eta continue "
        "(default: %(default)s rungs; 1 = every candidate trains --iterations)",
    )
    parser.add_argument(
        "--eta", type=float, default=2.0, help="halving factor per rung (default: %(default)s)"
    )
    parser.add_argument(
        "--promote-by",
        choices=PROMOTE_BY,
        default=DEFAULT_PROMOTE_BY,
        help="what ranks candidates at a rung before the last: the mean training loss just before "
        "the rung (lower is better; on the recorded grids it orders early candidates by their final "
        "AP far better than their early AP does), their AP, or the mean of both ranks; the decision "
        "itself is always on AP (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="run the finalists with this many seeds and decide on their mean AP (spread in the "
        "report; 1: the pilot's seed only, cheaper and noisier) (default: %(default)s)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster (auto, HOST:PORT, ray://HOST:PORT): a rung's pilot trials run there in parallel",
    )
    parser.add_argument("--token-file", default=None, help="the Ray cluster's auth token file")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray CPUs per pilot trial")
    parser.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="Ray GPUs per pilot trial (fractions ok)"
    )
    parser.add_argument(
        "--accept-untrained",
        action="store_true",
        help="decide even when no pilot learned anything (smoke tests); otherwise exit 4",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display and no per-trial lines: only the decision (and errors)",
    )
    parser.add_argument("--neighbours", type=int, default=2, help="earlier domains to warm-start from")
    parser.add_argument("--shift-images", type=int, default=64, help="images per domain for the shift")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-train-images", type=int, default=64)
    parser.add_argument("--num-eval-images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=5, help="timed inference runs per trial")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)


def run_select(args: argparse.Namespace) -> int:
    from models.errors import UserError
    from search.selection.candidates import parse_lrs
    from search.selection.decision import EXIT_INFEASIBLE, Budgets
    from search.selection.learned import EXIT_NOTHING_LEARNED
    from search.selection.outcome import SelectionSettings
    from search.selection.pilots import run_selection
    from search.selection.warmstart import DEFAULT_PILOT

    if (args.eval_data is None) != (args.eval_images is None):
        given = "--eval-data" if args.eval_images is None else "--eval-images"
        raise UserError(f"{given}: --eval-data and --eval-images go together")
    for name in (
        "iterations",
        "neighbours",
        "shift_images",
        "num_train_images",
        "num_eval_images",
        "batch_size",
        "latency_runs",
        "rungs",
        "seeds",
    ):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 1")
    if args.shift_images < 2:
        raise UserError("--shift-images: must be >= 2")
    if not args.eta > 1:
        raise UserError(f"--eta: must be > 1, got {args.eta}")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial: must be > 0 (and --gpus-per-trial >= 0)")
    if args.token_file and not args.address:
        raise UserError("--token-file: needs --address")
    budgets = Budgets(
        latency_budget_ms=args.latency_budget_ms,
        param_budget_pct=args.param_budget_pct,
        min_ap_fraction=args.min_ap_fraction,
    )
    from search.cli.checks import preflight_select

    preflight_select(args)  # dataset, base checkpoint and output folder, before any pilot runs
    settings = SelectionSettings(
        data_json=args.data,
        images_dir=args.images,
        budgets=budgets,
        model=args.model,
        base_checkpoint=args.base,
        domain_name=args.domain_name,
        history=list(args.history),
        reference_domain=args.reference_domain,
        neighbours=args.neighbours,
        shift_images=args.shift_images,
        image_size=args.image_size,
        iterations=args.iterations,
        lr=args.lr,
        eval_json=args.eval_data,
        eval_images=args.eval_images,
        seed=args.seed,
        device=args.device,
        pilot=args.pilot or DEFAULT_PILOT,
        lrs=parse_lrs(args.lrs) if args.lrs else None,
        rungs=args.rungs,
        eta=args.eta,
        promote_by=args.promote_by,
        seeds=args.seeds,
        address=args.address,
        token_file=args.token_file,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        accept_untrained=args.accept_untrained,
        trial_overrides={
            "num_train_images": args.num_train_images,
            "num_eval_images": args.num_eval_images,
            "batch_size": args.batch_size,
            "latency_runs": args.latency_runs,
        },
    )
    settings.out_dir = args.out or str(Path("runs") / "select" / settings.resolved_domain_name)

    from search.selection.progress import PilotProgress

    # The pilot's progress (rung k of n, candidates left, ETA): a bar on a terminal, plain lines
    # otherwise, nothing with --quiet; on stderr with --json (stdout is the result), else stdout.
    stream = sys.stderr if args.json else sys.stdout
    progress = PilotProgress("off" if args.quiet else "auto", stream=stream)

    def log(msg: str) -> None:
        progress.print(msg)  # above the bar, never through it; nothing with --quiet

    try:
        result = run_selection(settings, log=log, progress=progress)
    finally:
        progress.close()
    d = result.decision
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.nothing_learned is None:
        for line in d.explanation:
            print(line)
        print(f"Report: {Path(result.out_dir) / 'report.md'} and report.html")
    if result.nothing_learned is not None:
        print(
            f"peftsweep select: no pilot learned anything ({result.nothing_learned}), so there is "
            f"nothing to choose; likely causes: {'; '.join(result.likely_causes)}",
            file=sys.stderr,
        )
        return EXIT_NOTHING_LEARNED
    if not d.feasible:
        closest = d.closest.label if d.closest is not None else "none (no pilot trial completed)"
        print(f"peftsweep select: no method meets the budgets; closest: {closest}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0
