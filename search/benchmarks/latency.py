"""``peftsweep bench latency``: base vs merged peft methods (LoRA, DoRA, LoHa, IA3) vs adapters x1..xN,
ratios measured in one run.

Importing this module is cheap (torch is imported inside functions), because the CLI parser
imports it to build the benchmark's arguments. Measurement itself is :mod:`models.latency`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from models.latency import deployed_copy, measure_latency_interleaved

__all__ = ["add_arguments", "main"]

# --peft name -> (method, params besides the rank); each is deployed merged, like LoRA.
_PEFT_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dora": ("lora", {"use_dora": True}),
    "rslora": ("lora", {"use_rslora": True}),
    "pissa": ("lora", {"init": "pissa"}),
    "loha": ("loha", {}),
    "ia3": ("ia3", {}),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``peftsweep bench latency``."""
    parser.add_argument("--model", default="maskdino_tiny", help="model config name (models.registry)")
    parser.add_argument("--num-classes", type=int, default=4, help="classes of the head")
    parser.add_argument("--image-size", type=int, default=None, help="square input side (default: model's)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--lora-rank", type=int, default=8, help="rank of LoRA, DoRA and LoHa")
    parser.add_argument(
        "--peft",
        default="",
        help="comma-separated peft variants to add, merged: " + ",".join(_PEFT_VARIANTS) + " (default none)",
    )
    parser.add_argument("--max-repetitions", type=int, default=4, help="adapters x1..xN")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch (default: torch's, one per core); 1 on a shared machine, where "
        "threads that wait for each other on busy cores make every pass many times slower",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress: only the table")
    parser.add_argument(
        "--json", dest="json_out", default=None, help="also write the table to this json file"
    )


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from models.errors import UserError

    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {name} requested but CUDA is not available")
    return dev


def main(args: argparse.Namespace) -> int:
    """Base vs merged peft methods vs adapters x1..xN at one input size; prints latencies and ratios.

    ``--peft dora,loha,ia3`` adds those methods, merged. The base's all-zero weight matrices (the
    upstream init of the MSDA offsets and attention weights) get small values first, as
    pretraining gives them: DoRA needs a direction in every adapted row, and latency does not
    depend on the values.
    """
    import torch

    from models.errors import UserError

    dev = _resolve_device(args.device)
    if args.runs < 1 or args.warmup < 0 or args.max_repetitions < 0:
        raise UserError("--runs must be >= 1, --warmup and --max-repetitions >= 0")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    try:  # the thread count is the process's: restored for callers that go on (tests)
        if threads is not None:
            torch.set_num_threads(threads)
        return _measure(args, dev)
    finally:
        torch.set_num_threads(previous)


def _measure(args: argparse.Namespace, dev: Any) -> int:
    import torch

    import models
    from models.errors import UserError
    from models.peft import apply_method, build_method_config
    from models.progress import Progress

    torch.manual_seed(0)
    base = models.build_model(args.model, args.num_classes)
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2 and not p.any():
                p.normal_(0.0, 0.02)
    size = args.image_size or int(getattr(base, "image_size", 0) or 0) or 128

    r = args.lora_rank
    peft = [p.strip() for p in args.peft.split(",") if p.strip()]
    bad = [p for p in peft if p not in _PEFT_VARIANTS]
    if bad:
        raise UserError(f"--peft: unknown variant {bad[0]!r}; allowed: {', '.join(_PEFT_VARIANTS)}")
    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("base", "", {}),
        (f"lora r{r} merged", "lora", {"rank": r}),
    ]
    for name in peft:
        method, extra = _PEFT_VARIANTS[name]
        params = extra if method == "ia3" else {"rank": r, **extra}
        variants.append((f"{name}{'' if method == 'ia3' else f' r{r}'} merged", method, params))
    variants += [(f"adapter x{k}", "adapter", {"repetitions": k}) for k in range(1, args.max_repetitions + 1)]
    base_state = base.state_dict()
    deployed: dict[str, Any] = {}
    # Progress on stderr (stdout is the table): models built, then every pass (warm-up included).
    passes = len(variants) * (args.warmup + args.runs)
    with Progress("off" if getattr(args, "quiet", False) else "auto") as progress:
        progress.add("build", "bench latency: build", total=len(variants))
        for label, method, params in variants:
            progress.update("build", info=label)
            if method:
                model = models.build_model(args.model, args.num_classes)
                model.load_state_dict(base_state)
                apply_method(model, build_method_config(method, **params))
                deployed[label] = deployed_copy(model)
            else:
                deployed[label] = base.eval()
            progress.update("build", advance=1)
        progress.add("passes", f"bench latency: passes of {len(variants)} models", total=passes)
        results = measure_latency_interleaved(
            deployed,
            size,
            dev,
            warmup=args.warmup,
            runs=args.runs,
            on_pass=lambda: progress.update("passes", advance=1),
        )
    rows: list[dict[str, Any]] = [{"variant": label, **results[label].to_dict()} for label, _, _ in variants]
    base_ms = rows[0]["median_ms"]
    print(f"latency, {args.model}, {size}x{size}, batch 1, {rows[0]['device']}, median of {args.runs}")
    print(f"{'variant':<20} {'median ms':>10} {'p90 ms':>10} {'vs base':>9}")
    for r in rows:
        r["ratio_to_base"] = r["median_ms"] / base_ms
        print(f"{r['variant']:<20} {r['median_ms']:>10.2f} {r['p90_ms']:>10.2f} {r['ratio_to_base']:>8.3f}x")
    if args.json_out:
        from models.data.coco import atomic_write_json

        atomic_write_json(os.fspath(args.json_out), {"model": args.model, "image_size": size, "rows": rows})
    # Machine-readable tail for scripts: one json line.
    print(json.dumps({r["variant"]: round(r["ratio_to_base"], 4) for r in rows}))
    return 0
