"""Shared helpers for the data/trial tests."""

from __future__ import annotations

import argparse
import sys

import pytest

from models.errors import UserError


def run_cli(argv: list[str]) -> int:
    """Run one of search.cli.data's commands the way search.cli does (UserError -> message, exit 2).

    Builds the parser from search.cli.data only, so these tests do not depend on every other command
    module of the CLI being importable.
    """
    from search.cli import data as cli

    parser = argparse.ArgumentParser(prog="peftsweep")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("data", "pretrain"):
        cmd = sub.add_parser(name)
        getattr(cli, f"add_{name}_arguments")(cmd)
        cmd.set_defaults(_handler=getattr(cli, f"run_{name}"))
    args = parser.parse_args(argv)
    try:
        return int(args._handler(args) or 0)
    except UserError as exc:
        print(f"peftsweep: error: {exc}", file=sys.stderr)
        return 2


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these tiny-shape tests on one torch thread, restored afterwards.

    On the shared 2-core machines, two OpenMP threads per process made the short trial ~50x
    slower under load (spinning on shared cores); one thread is also fastest at these sizes.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
