"""The ``peftsweep`` command line: argument wiring only (the top layer; it may import everything).

Each subcommand has a module here that parses its arguments and calls the package that does the
work; this file only wires them together. A command module provides ``add_arguments(parser)``
and ``run(args) -> int`` for each command (``add_<cmd>_arguments`` / ``run_<cmd>`` when one module
serves several). Heavy imports (torch, ray) stay inside the ``run`` functions so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from models.errors import UserError

# detectron2 (2024) still decorates helpers with torch.jit.script; torch 2.14 warns on every start.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors in the project's form, ``<argument>: <problem>``
    (argparse's own "usage + prog: error" lines would not name the argument first)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{_argparse_message(message)}\n(see '{self.prog} --help')")


def _argparse_message(message: str) -> str:
    """argparse's messages with the argument first: 'argument --x: bad' -> '--x: bad'."""
    if message.startswith("argument "):
        name, sep, rest = message.removeprefix("argument ").partition(": ")
        if sep:
            return f"{name.split('/')[0]}: {rest}"
    for prefix, what in (
        ("the following arguments are required: ", "required (missing)"),
        ("unrecognized arguments: ", "unrecognized argument"),
    ):
        if message.startswith(prefix):
            names = message.removeprefix(prefix).split(", " if "required" in prefix else " ")
            more = f" (also: {', '.join(names[1:])})" if len(names) > 1 else ""
            return f"{names[0]}: {what}{more}"
    return f"arguments: {message}"


# name -> (module, help). The module holds add_<name>_arguments(parser) and run_<name>(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("search.cli.sweep", "run a sweep from a YAML config on a local (embedded) Ray"),
    "resume": ("search.cli.sweep", "resume a sweep from its output folder without redoing finished trials"),
    "demo": ("search.cli.sweep", "the main job: pretrain a small base if absent, then a real small sweep"),
    "launch": (
        "search.cli.cluster",
        "run a sweep on an existing Ray cluster (--address ray://HOST:PORT|auto)",
    ),
    "pareto": ("search.cli.results", "print the Pareto front(s) of a sweep output folder"),
    "report": (
        "search.cli.results",
        "write the reports of a sweep output folder: interactive HTML (one file) and static HTML + PNG",
    ),
    "status": (
        "search.cli.results",
        "where a running or finished sweep stands: trials by state, front so far, hypervolume, ETA",
    ),
    "select": ("search.cli.select", "pick a PEFT method for a new domain automatically"),
    "params": ("search.cli.params", "count total and trainable parameters of a model + PEFT method"),
    "data": (
        "search.cli.data",
        "dataset tools: 'data check' validates a COCO dataset, 'data synth' writes one",
    ),
    "pretrain": ("search.cli.data", "train a small base model on the synthetic source domain"),
    "bench": ("search.cli.bench", "benchmarks: 'bench kernel', 'bench latency', 'bench search'"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peftsweep",
        description="Distributed hyperparameter search for parameter-efficient fine-tuning "
        "of instance-segmentation models (Mask DINO, SEEM) with Ray Tune + Optuna.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments")(cmd)
        cmd.set_defaults(_handler=getattr(module, f"run_{name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args._handler(args) or 0)
    except UserError as exc:
        print(f"peftsweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("peftsweep: interrupted", file=sys.stderr)
        return 130


def _entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
