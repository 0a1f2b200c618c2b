"""``peftsweep run CONFIG``, ``peftsweep resume OUT`` and ``peftsweep demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "add_run_arguments",
    "run_run",
    "add_resume_arguments",
    "run_resume",
    "add_demo_arguments",
    "run_demo",
    "demo_config",
    "print_fronts",
]


def print_fronts(fronts: dict[str, Any], file: Any = sys.stdout, output_dir: Any = None) -> None:
    """Human-readable fronts (one block per domain); with the sweep's ``output_dir``, each block
    ends with the study's compute (iterations trained of those scheduled, trials stopped early)."""
    compute: dict[str, list[str]] = {}
    if output_dir is not None:
        from search.results.status import compute_lines, sweep_status

        compute = {s.study: compute_lines(s) for s in sweep_status(output_dir).studies}
    for dom, fr in fronts.items():
        ref = ", ".join(f"{n}={r:.4g}" for n, r in zip(fr.objectives, fr.ref))
        print(
            f"== domain {dom}: {len(fr.front)} non-dominated of {fr.n_considered} completed feasible "
            f"({fr.n_total} trials); hypervolume {fr.hypervolume:.5g} (ref: {ref})",
            file=file,
        )
        cols = ["trial_id", "method", "lora_rank", "adapter_repetitions", "lr", *fr.objectives]
        for rec in fr.front.to_dict(orient="records"):
            knee = "  <- knee" if rec.get("trial_id") == fr.knee_trial_id else ""
            parts = []
            for c in cols:
                v = rec.get(c)
                if v is None or (isinstance(v, float) and v != v):
                    continue
                parts.append(f"{c}={v:.4g}" if isinstance(v, float) else f"{c}={v}")
            print("  " + " ".join(parts) + knee, file=file)
        for line in compute.get(dom, []):
            print("  " + line, file=file)


def run_and_record(config: Any, **kwargs: Any) -> Any:
    """Run (or resume) a sweep, then record its domains' feature statistics for later ``select`` runs.

    The statistics are a step of the caller, not of the engine: the engine never imports selection.
    """
    from search.engine.runner import run_sweep
    from search.selection.domain_stats import record_sweep_stats

    res = run_sweep(config, **kwargs)
    record_sweep_stats(res.output_dir, config)
    if kwargs.get("report", True):
        from search.results.interactive import write_interactive

        write_interactive(res.output_dir)
    return res


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep YAML (see README: 'Sweep config')")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--address", help="Ray cluster address (default: an embedded local Ray)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    parser.add_argument("--quiet", action="store_true", help="no per-trial progress lines")


def run_run(args: argparse.Namespace) -> int:
    from search.cli.checks import preflight_sweep
    from search.config import load_config

    config = load_config(args.config)
    if args.output_dir:
        config = config.model_copy(update={"output_dir": args.output_dir})
    preflight_sweep(config)  # bad files and folders end here, before Ray starts
    res = run_and_record(
        config, address=_address(args.address), resume=False, quiet=args.quiet, report=not args.no_report
    )
    print_fronts(res.fronts, output_dir=res.output_dir)
    print(f"sweep {res.sweep_id}: {len(res.trials)} trials in {res.seconds:.0f}s -> {res.output_dir}")
    return 0


def _address(address: str | None) -> str | None:
    """``--address`` checked before anything is written: its form, and that a cluster answers."""
    if not address:
        return None
    from search.cluster.connect import check_reachable

    return check_reachable(address)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="the output folder of an interrupted sweep")
    parser.add_argument("--address", help="Ray cluster address (default: an embedded local Ray)")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def run_resume(args: argparse.Namespace) -> int:
    from search.results.sweep_files import load_sweep

    config, _ = load_sweep(args.output_dir)
    config = config.model_copy(update={"output_dir": str(Path(args.output_dir).resolve())})
    res = run_and_record(
        config, address=_address(args.address), resume=True, quiet=args.quiet, report=not args.no_report
    )
    print_fronts(res.fronts, output_dir=res.output_dir)
    print(f"sweep {res.sweep_id}: {len(res.trials)} trials -> {res.output_dir}")
    return 0


def demo_config(
    output_dir: str,
    base_checkpoint: str | None,
    trials_per_domain: int = 6,
    iterations: int = 40,
    wandb: bool = False,
) -> Any:
    """The demo sweep: LoRA + adapters on two synthetic domains (clean, xray), 3 objectives."""
    from search.config import parse_config

    return parse_config(
        {
            "name": "demo",
            "model": {"name": "maskdino_tiny", "base_checkpoint": base_checkpoint},
            "domains": ["clean", "xray"],
            "space": {
                "methods": ["lora", "adapter"],
                "lora": {
                    "rank": [2, 4, 8, 16],
                    "alpha": [8.0],
                    "targets": [["msda"], ["msda", "dec_self_qv"]],
                },
                "adapter": {
                    "repetitions": [1, 2, 3],
                    "placement": [["enc_self", "dec_self", "dec_cross"]],
                    "residual": ["kappa+lambda"],
                    "reduction": [4, 8],
                },
                "lr": {"low": 3e-4, "high": 3e-3, "log": True},
                "iterations": [iterations],
            },
            "constraints": [{"metric": "trainable_pct", "op": "<=", "value": 10.0}],
            "budget": {"trials": trials_per_domain, "concurrency": 2, "cpus_per_trial": 1, "max_failures": 1},
            "sampler": {
                "name": "tpe",
                "seed": 0,
                "startup_trials": 3,
                # the paper's recipes first: LoRA r=8 on MSDA + decoder q/v, adapters x2
                "initial_points": [
                    {
                        "method": "lora",
                        "lora_rank": 8,
                        "lora_alpha": 8.0,
                        "lora_targets": "msda,dec_self_qv",
                        "lr": 1e-3,
                        "iterations": iterations,
                    },
                    {
                        "method": "adapter",
                        "adapter_repetitions": 2,
                        "adapter_placement": "enc_self,dec_self,dec_cross",
                        "adapter_residual": "kappa+lambda",
                        "adapter_reduction": 4,
                        "lr": 1e-3,
                        "iterations": iterations,
                    },
                ],
            },
            "early_stopping": {
                "enabled": True,
                "grace_iterations": max(1, iterations // 2),
                "reduction_factor": 2,
            },
            "trial": {
                "function": "search.engine.model_trial:prepare",
                "eval_every": max(1, iterations // 2),
                "seed": 0,
                "extra": {
                    "num_train_images": 32,
                    "num_eval_images": 8,
                    # ~12 ms a pass: 3 warm-up + 10 timed passes cost ~0.15 s and keep the first
                    # (cold) passes of a fresh worker process out of the latency objective
                    "latency_runs": 10,
                    "latency_warmup": 3,
                    "batch_size": 2,
                },
            },
            "output_dir": output_dir,
            "wandb": {"enabled": wandb, "mode": "auto"},
        },
        source="demo config",
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default=None, help="sweep folder (default runs/demo-<time>)")
    parser.add_argument(
        "--base",
        metavar="CKPT",
        default=None,
        help="base checkpoint to fine-tune (default: the small base shipped in the package, "
        "models/pretrained/maskdino_tiny_source)",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain a fresh small base into --base-dir instead of using the shipped one "
        "(about 16 CPU-minutes; reused when --base-dir already holds one)",
    )
    parser.add_argument("--base-dir", default="runs/base", help="where --pretrain writes its base")
    parser.add_argument("--trials-per-domain", type=int, default=6, help="trials per domain (2 domains)")
    parser.add_argument("--iterations", type=int, default=40, help="fine-tuning iterations per trial")
    parser.add_argument("--wandb", action="store_true", help="also log to W&B (offline without a key)")
    parser.add_argument("--quiet", action="store_true", help="no progress, no log lines: only the fronts")


def _demo_base(args: argparse.Namespace) -> Path:
    """The demo's base checkpoint: ``--base``; else with ``--pretrain`` the one in ``--base-dir``
    (pretrained there first when absent); else the one shipped in the package
    (:mod:`models.pretrained`), or, when an installation lacks it, as with ``--pretrain``."""
    from models.errors import UserError
    from models.pretrain import CHECKPOINT_NAME, PretrainConfig, pretrain

    say = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.base:
        ckpt = Path(args.base)
        if not ckpt.is_file():
            raise UserError(f"--base: {ckpt} is not a file")
        return ckpt
    if not args.pretrain:
        from models.pretrained import SHIPPED_BASE_DIR

        ckpt = SHIPPED_BASE_DIR / CHECKPOINT_NAME
        if ckpt.is_file():
            info = json.loads((SHIPPED_BASE_DIR / "pretrain.json").read_text())
            say(f"demo: base {ckpt} (shipped; source-domain mask AP {info['eval']['ap']:.1f})")
            return ckpt
        say("demo: this installation has no shipped base; pretraining one instead")
    from search.selection.domain_stats import record_pretrain_stats

    base_dir = Path(args.base_dir)
    ckpt = base_dir / CHECKPOINT_NAME
    if ckpt.exists():
        say(f"demo: reusing the base pretrained earlier in {base_dir} (delete it to pretrain again)")
        return ckpt
    say(f"demo: pretraining a fresh base in {base_dir} on the synthetic source domain")
    t = time.time()
    info = pretrain(base_dir, PretrainConfig(), log=say, progress="off" if args.quiet else "auto")
    record_pretrain_stats(base_dir, log=say)
    say(f"demo: base pretrained in {time.time() - t:.0f}s; source-domain mask AP {info['eval']['ap']:.1f}")
    return ckpt


def run_demo(args: argparse.Namespace) -> int:
    from models.errors import UserError

    if args.trials_per_domain < 1 or args.iterations < 1:
        raise UserError("--trials-per-domain and --iterations must be >= 1")
    if args.base and args.pretrain:
        raise UserError("--base and --pretrain: pass one of them (a checkpoint, or pretrain a fresh base)")
    ckpt = _demo_base(args)
    out = args.output_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = demo_config(out, str(ckpt.resolve()), args.trials_per_domain, args.iterations, args.wandb)
    res = run_and_record(config, quiet=args.quiet)
    print_fronts(res.fronts, output_dir=res.output_dir)
    print(
        f"demo: {len(res.trials)} trials in {res.seconds:.0f}s; "
        f"report: {res.output_dir / 'report' / 'interactive.html'} (static: index.html)"
    )
    return 0
