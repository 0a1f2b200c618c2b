"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_bench(args: argparse.Namespace) -> int:
    raise NotImplementedError("bench")

