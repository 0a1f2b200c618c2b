"""``peftsweep data`` (check | synth | stardist) and ``peftsweep pretrain``.

Heavy imports stay inside the run functions so ``peftsweep --help`` is fast.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_data_arguments", "run_data", "add_pretrain_arguments", "run_pretrain"]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a COCO instance-segmentation dataset")
    check.add_argument("--json", required=True, help="COCO annotation file")
    check.add_argument("--images", required=True, help="folder the file_name entries are relative to")
    check.add_argument("--no-read", action="store_true", help="only check image files exist (faster)")
    check.add_argument("--report-json", default=None, help="also write the summary as json here")
    synth = sub.add_parser("synth", help="write a synthetic domain as COCO json + PNG images")
    synth.add_argument("--domain", required=True, help="source | clean | clutter | xray | street")
    synth.add_argument("--out", required=True, help="output folder (images/ + annotations.json)")
    synth.add_argument("--num-images", type=int, default=100)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=128)
    star = sub.add_parser("stardist", help="convert the stardist nuclei sample (installed data) to COCO")
    star.add_argument("--out", required=True, help="output folder (images/ + annotations.json)")


def run_data(args: argparse.Namespace) -> int:
    from models.errors import UserError

    if args.action == "check":
        from models.data.check import check_coco_dataset

        if args.report_json:
            from pathlib import Path

            from search.cli.checks import writable_dir

            writable_dir(Path(args.report_json).parent, "--report-json")
        report = check_coco_dataset(args.json, args.images, read_images=not args.no_read)
        print(report.format())
        if args.report_json:
            from models.data.coco import atomic_write_json

            atomic_write_json(args.report_json, report.to_dict())
        return 0
    if args.action == "synth":
        from models.data.coco import write_synthetic_coco
        from search.cli.checks import writable_dir

        if args.num_images < 1:
            raise UserError(f"--num-images: must be >= 1, got {args.num_images}")
        writable_dir(args.out, "--out", must_be_empty=True)
        path = write_synthetic_coco(
            args.domain, args.out, args.num_images, seed=args.seed, image_size=args.image_size
        )
        print(f"wrote {args.num_images} images of domain {args.domain!r} to {path.parent} ({path.name})")
        return 0
    if args.action == "stardist":
        from models.data.stardist import write_stardist_coco

        path = write_stardist_coco(args.out)
        n = len(json.loads(path.read_text())["annotations"])
        print(f"wrote {path} ({n} nuclei)")
        return 0
    raise UserError(f"data: unknown action {args.action!r}")  # pragma: no cover - argparse restricts


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    from models.pretrain import PretrainConfig

    d = PretrainConfig()
    parser.add_argument("--out", required=True, help="output folder (base.pt + pretrain.json)")
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--iterations", type=int, default=d.iterations)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup-iters", type=int, default=d.warmup_iters)
    parser.add_argument("--image-size", type=int, default=d.image_size)
    parser.add_argument("--num-train-images", type=int, default=d.num_train_images)
    parser.add_argument("--num-eval-images", type=int, default=d.num_eval_images)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads (default 0: every core; 1 can be faster on a CPU other jobs share)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing (no log lines, no progress bar)")


def run_pretrain(args: argparse.Namespace) -> int:
    from models.errors import UserError
    from models.pretrain import PretrainConfig, pretrain
    from search.cli.checks import writable_dir

    for flag in ("iterations", "batch_size", "num_train_images", "num_eval_images"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: must be >= 1, got {getattr(args, flag)}")
    writable_dir(args.out, "--out")
    cfg = PretrainConfig(
        model=args.model,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_iters=args.warmup_iters,
        image_size=args.image_size,
        num_train_images=args.num_train_images,
        num_eval_images=args.num_eval_images,
        seed=args.seed,
        device=args.device,
        log_every=args.log_every,
        threads=args.threads,
    )
    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    pretrain(args.out, cfg, log=log, progress="off" if args.quiet else "auto")
    from search.selection.domain_stats import record_pretrain_stats

    record_pretrain_stats(args.out, log=log)
    return 0
