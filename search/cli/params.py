"""``peftsweep params``: total and trainable parameters of a model with a PEFT method applied.

Example: ``peftsweep params --model maskdino_r50 --num-classes 80 --method lora --rank 8 --json``;
peft's LoRA variants (``--dora``, ``--rslora``, ``--init pissa``) and sibling methods (``--method loha``,
``--method ia3``) count the same way.
The model is built on the ``meta`` device by default (shapes only, no memory, no init cost), which
is exact for counting; ``--device cpu`` builds real weights.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_params_arguments", "run_params", "method_params_from_args"]

_METHODS = ("lora", "loha", "ia3", "adapter", "full_head", "decoder_only", "class_mask")
_LORA_INITS = ("default", "gaussian", "pissa", "olora")  # models.peft.lora.config.LORA_INITS (no torch here)


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="registered model name, e.g. maskdino_r50, maskdino_tiny"
    )
    parser.add_argument("--num-classes", type=int, default=80, help="class count of the head (default 80)")
    parser.add_argument("--method", required=True, choices=_METHODS, help="PEFT method")
    lora = parser.add_argument_group("lora, loha, ia3 (peft)")
    lora.add_argument("--rank", type=int, help="LoRA / LoHa rank (default 8)")
    lora.add_argument("--alpha", type=float, help="LoRA / LoHa alpha (default 8)")
    lora.add_argument("--targets", help="comma-separated target sets (default: the model family's recipe)")
    lora.add_argument("--dora", action="store_true", default=None, help="LoRA: DoRA magnitudes")
    lora.add_argument("--rslora", action="store_true", default=None, help="LoRA: scaling alpha / sqrt(rank)")
    lora.add_argument("--init", choices=_LORA_INITS, help="LoRA: factor initialisation (default: default)")
    adapter = parser.add_argument_group("adapter")
    adapter.add_argument("--reps", type=int, help="adapter repetitions per site, 1..4 (default 1)")
    adapter.add_argument(
        "--placement", help="comma-separated subset of enc_self,dec_self,dec_cross (default all)"
    )
    adapter.add_argument("--residual", help="kappa | lambda | kappa+lambda (default kappa+lambda)")
    adapter.add_argument("--reduction", type=int, help="bottleneck reduction factor (default 4)")
    parser.add_argument(
        "--extra-trainable", help="comma-separated extra regex patterns of parameter/module names to train"
    )
    parser.add_argument(
        "--reinitialized",
        help="comma-separated parameter/module names re-initialised for a new class count (trained too), "
        "e.g. sem_seg_head.predictor.label_enc",
    )
    parser.add_argument(
        "--device", default="meta", help="where to build the model: meta (default, shapes only) or cpu"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def method_params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The method config fields given on the command line (others keep their defaults)."""
    fields: dict[str, tuple[str, ...]] = {
        "lora": ("rank", "alpha", "targets", "dora", "rslora", "init"),
        "loha": ("rank", "alpha", "targets"),
        "ia3": ("targets",),
        "adapter": ("reps", "placement", "residual", "reduction"),
    }
    rename = {"reps": "repetitions", "dora": "use_dora", "rslora": "use_rslora"}
    params: dict[str, Any] = {}
    for flag in fields.get(args.method, ()):
        value = getattr(args, flag)
        if value is not None:
            params[rename.get(flag, flag)] = value
    other = [
        f
        for group in fields.values()
        for f in group
        if f not in fields.get(args.method, ()) and getattr(args, f)
    ]
    if other:
        from models.errors import UserError

        raise UserError(f"--{other[0]}: does not apply to --method {args.method}")
    if args.extra_trainable:
        params["extra_trainable"] = args.extra_trainable
    return params


def _flag_message(message: str, method: str) -> str:
    flags = {"repetitions": "reps"}
    head, sep, rest = message.partition(" ")
    if sep and head.startswith(f"{method}.") and ":" not in head:
        field = head.removeprefix(f"{method}.")
        return f"--{flags.get(field, field).replace('_', '-')}: {rest}"
    return message


def run_params(args: argparse.Namespace) -> int:
    import torch

    from models import build_model
    from models.errors import UserError
    from models.peft import apply_method, build_method_config

    try:
        config = build_method_config(args.method, **method_params_from_args(args))
    except UserError as exc:  # "<method>.<field> must ..." names the config field: name the flag
        raise UserError(_flag_message(str(exc), args.method)) from None
    reinit = [s.strip() for s in (args.reinitialized or "").split(",") if s.strip()]
    if args.num_classes < 1:
        raise UserError(f"--num-classes: must be >= 1, got {args.num_classes}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device: unknown device {args.device!r}") from None
    with device:
        model = build_model(args.model, args.num_classes)
    info = apply_method(model, config, reinitialized=reinit)
    result = {
        "model": args.model,
        "num_classes": args.num_classes,
        "method": args.method,
        "config": config.to_dict(),
        "total": info.total,
        "trainable": info.trainable,
        "trainable_pct": round(info.trainable_pct, 4),
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"model          {args.model} ({args.num_classes} classes)")
        print(f"method         {args.method} {json.dumps(config.to_dict(), sort_keys=True)}")
        print(f"total          {info.total:,}")
        print(f"trainable      {info.trainable:,}")
        print(f"trainable_pct  {info.trainable_pct:.4f} %")
    return 0
