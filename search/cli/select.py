"""``peftsweep select``: pick a PEFT method for a new domain automatically.

Exit status: 0 when a method meets the budgets, 3 (:data:`search.selection.decision.EXIT_INFEASIBLE`) when
none does (the closest one is named), 2 for bad input (:class:`models.errors.UserError`).
With ``--json`` the machine-readable result goes to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_select_arguments", "run_select"]


def add_select_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per pilot trial")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the pilot trials")
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
    from search.selection.decision import EXIT_INFEASIBLE, Budgets
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
    ):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 1")
    if args.shift_images < 2:
        raise UserError("--shift-images: must be >= 2")
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
        trial_overrides={
            "num_train_images": args.num_train_images,
            "num_eval_images": args.num_eval_images,
            "batch_size": args.batch_size,
            "latency_runs": args.latency_runs,
        },
    )
    settings.out_dir = args.out or str(Path("runs") / "select" / settings.resolved_domain_name)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = run_selection(settings, log=log)
    d = result.decision
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in d.explanation:
            print(line)
        print(f"Report: {Path(result.out_dir) / 'report.md'} and report.html")
    if not d.feasible:
        closest = d.closest.label if d.closest is not None else "none (no pilot trial completed)"
        print(f"peftsweep select: no method meets the budgets; closest: {closest}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0
